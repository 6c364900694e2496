import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import {
  Lab,
  labUnavailableReason,
  NAT_TYPES,
  type LabState,
  type NatType,
  type TopologySpec,
} from '../../lab/index.js';
import { NatpunchError } from '../../util/errors.js';
import { action, printEvent, progress } from '../util.js';
import { genericLine } from '../events.js';

function requireLab(): void {
  const reason = labUnavailableReason();
  if (reason) throw new NatpunchError('NOT_ROOT', `${reason}; run natpunch lab as root (sudo)`);
}

function natType(value: string): NatType {
  if (!(NAT_TYPES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`must be one of ${NAT_TYPES.join(', ')}`);
  }
  return value as NatType;
}

/** A link's conditions as flags (`lab up` for natA/natB's uplinks, `lab link` for one link). */
interface LinkShapeFlags {
  delay?: number;
  jitter?: number;
  loss?: number;
  rate?: number;
}

function addLinkShapeFlags(cmd: Command, where: string): Command {
  return cmd
    .option('--delay <ms>', `one-way delay ${where}, each direction`, number('--delay', 0, 60000))
    .option('--jitter <ms>', `jitter ± ms ${where}`, number('--jitter', 0, 60000))
    .option('--loss <pct>', `random loss ${where}, each direction`, number('--loss', 0, 100))
    .option('--rate <mbit>', `bandwidth limit ${where} (0: none)`, number('--rate', 0, 100000));
}

/** The flags given, as the lab's link shape (absent flags keep the link's current or default value). */
function linkShape(o: LinkShapeFlags) {
  return {
    ...(o.delay !== undefined ? { delayMs: o.delay } : {}),
    ...(o.jitter !== undefined ? { jitterMs: o.jitter } : {}),
    ...(o.loss !== undefined ? { lossPct: o.loss } : {}),
    ...(o.rate !== undefined ? { rateMbit: o.rate } : {}),
  };
}

function number(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be a number from ${min} to ${max}`);
    return n;
  };
}

/** CLI labs whose namespaces still exist (a reboot or `ip netns del` leaves a stale state file: forget it). */
function cliLabs(): LabState[] {
  const out: LabState[] = [];
  for (const s of Lab.list().filter((x) => x.detached && x.ready)) {
    if (existsSync(`/run/netns/np${s.id}-internet`)) out.push(s);
    else Lab.forget(s.id);
  }
  return out;
}

/** The CLI's lab: the most recent detached (CLI-made) lab recorded on this machine. */
function currentLab(id?: string): Lab {
  if (id) return Lab.attach(id);
  const cli = cliLabs();
  const last = cli[cli.length - 1];
  if (!last) throw new NatpunchError('LAB', 'no lab is up; start one with `natpunch lab up`');
  return Lab.attach(last.id);
}

function summary(s: LabState) {
  const nodes = Object.values(s.topology.nodes)
    .filter((n) => n.kind !== 'internet')
    .map((n) => ({
      name: n.name,
      kind: n.kind,
      namespace: `np${s.id}-${n.name}`,
      addrs: n.addrs,
      on: s.topology.links[n.name]?.parent ?? 'internet',
      ...(n.kind === 'router' ? { lan: n.lanCidr, nat: s.nat[n.name] } : {}),
    }));
  const links = Object.fromEntries(
    Object.entries(s.links).filter(([, l]) => l.delayMs || l.jitterMs || l.lossPct || l.rateMbit),
  );
  return { id: s.id, createdAt: s.createdAt, nodes, shapedLinks: links, delayers: s.delayers };
}

function printHuman(s: LabState): void {
  const sum = summary(s);
  const out: string[] = [`lab ${s.id} (created ${s.createdAt})`];
  for (const n of sum.nodes) {
    const nat =
      n.kind === 'router'
        ? `  nat=${s.nat[n.name]!.type}${s.nat[n.name]!.stealth ? ',stealth' : ''}${s.nat[n.name]!.hairpin ? '' : ',no-hairpin'}  lan=${n.lan}`
        : '';
    out.push(`  ${n.name.padEnd(8)} ${n.kind.padEnd(6)} ${n.addrs.join(', ').padEnd(28)} on ${n.on}${nat}`);
  }
  for (const [name, l] of Object.entries(sum.shapedLinks)) {
    out.push(
      `  link ${name}: delay ${l.delayMs} ms ±${l.jitterMs}, loss ${l.lossPct}%, rate ${l.rateMbit || '∞'} Mbit/s (each direction)`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

export function register(program: Command): void {
  const lab = program
    .command('lab')
    .description(
      'a NAT lab of real Linux NATs in network namespaces (root): run your own programs across any NAT pair',
    );

  addLinkShapeFlags(
    lab
      .command('up')
      .description(
        'start a lab: server, natA (a, a2), natB (b); hosts are reached with `natpunch lab exec HOST -- CMD`',
      )
      .option('--a <type>', `NAT type of natA (${NAT_TYPES.join(', ')})`, natType)
      .option('--b <type>', 'NAT type of natB', natType),
    "on natA's and natB's internet links",
  )
    .option('--double-nat', 'also start cgn (carrier-grade NAT, 100.64.0.0/10) with natC and host c behind it')
    .option(
      '--topology <file>',
      'a JSON topology instead of the default ({"routers": {...}, "hosts": {...}}, see docs/lab.md)',
    )
    .option('--json', 'print the lab as JSON')
    .action(
      action(
        async (opts: {
          a?: NatType;
          b?: NatType;
          delay?: number;
          jitter?: number;
          loss?: number;
          rate?: number;
          doubleNat?: boolean;
          topology?: string;
          json?: boolean;
        }) => {
          requireLab();
          let topology: TopologySpec | undefined;
          if (opts.topology) {
            try {
              topology = JSON.parse(readFileSync(opts.topology, 'utf8')) as TopologySpec;
            } catch (err) {
              throw new NatpunchError(
                'BAD_ARGUMENT',
                `cannot read topology ${opts.topology}: ${(err as Error).message}`,
              );
            }
            if (!topology || typeof topology.routers !== 'object' || typeof topology.hosts !== 'object') {
              throw new NatpunchError('BAD_ARGUMENT', `topology ${opts.topology} needs "routers" and "hosts" objects`);
            }
            if (
              opts.a ||
              opts.b ||
              opts.doubleNat ||
              opts.delay !== undefined ||
              opts.jitter !== undefined ||
              opts.loss !== undefined ||
              opts.rate !== undefined
            ) {
              throw new NatpunchError(
                'BAD_ARGUMENT',
                '--topology sets NATs in the file; use `natpunch lab nat` / `lab link` afterwards',
              );
            }
          }
          const running = cliLabs();
          if (running.length > 0) {
            throw new NatpunchError(
              'LAB',
              `lab ${running[running.length - 1]!.id} is already up; run \`natpunch lab down\` first`,
            );
          }
          const shape = linkShape(opts);
          const links = Object.keys(shape).length ? { natA: shape, natB: shape } : undefined;
          const l = await Lab.up({
            detached: true,
            ...(topology ? { topology } : {}),
            doubleNat: Boolean(opts.doubleNat),
            nat: { ...(opts.a ? { natA: opts.a } : {}), ...(opts.b ? { natB: opts.b } : {}) },
            ...(links ? { links } : {}),
          });
          if (opts.json) printEvent('lab', summary(l.state));
          else {
            printHuman(l.state);
            progress(
              false,
              `try: natpunch lab exec ${l.hosts.find((h) => h !== 'server') ?? l.hosts[0]} -- ip route    |    natpunch lab down`,
            );
          }
        },
      ),
    );

  lab
    .command('exec')
    .description("run a command inside a lab host's namespace (e.g. natpunch lab exec a -- natpunch netcheck ...)")
    .argument('<host>', 'server, natA, a, a2, natB, b, internet (and cgn, natC, c with --double-nat)')
    .argument('<cmd...>', 'command and arguments (put them after --)')
    .option('--lab <id>', 'lab id (default: the lab started with `natpunch lab up`)')
    .action(
      action(async (host: string, cmd: string[], opts: { lab?: string }) => {
        requireLab();
        const l = currentLab(opts.lab);
        const ns = l.ns(host);
        const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'inherit' });
        const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
        const onInt = forward('SIGINT');
        const onTerm = forward('SIGTERM');
        process.on('SIGINT', onInt);
        process.on('SIGTERM', onTerm);
        const code = await new Promise<number>((resolve) => {
          child.once('error', (err) => {
            process.stderr.write(`natpunch: ${err.message}\n`);
            resolve(127);
          });
          child.once('exit', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
        });
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        process.exitCode = code;
      }),
    );

  lab
    .command('nat')
    .description("switch a router's NAT behaviour while the lab runs (flushes its mappings)")
    .argument('<router>', 'natA, natB (cgn, natC with --double-nat)')
    .argument('<type>', NAT_TYPES.join(' | '), natType)
    .option('--stealth', 'drop unsolicited packets silently instead of RST / ICMP unreachable')
    .option('--no-hairpin', 'disable hairpinning')
    .option('--no-port-preservation', 'allocate external ports from the NAT pool instead of keeping the local port')
    .option('--no-icmp-errors', 'do not forward ICMP errors to LAN hosts')
    .option('--mapping-timeout <s>', 'UDP mapping lifetime in seconds', number('--mapping-timeout', 1, 86400))
    .option('--lab <id>', 'lab id (default: the lab started with `natpunch lab up`)')
    .option('--json', 'the NAT now in force as a JSON line')
    .action(
      action(
        async (
          router: string,
          type: NatType,
          opts: {
            stealth?: boolean;
            hairpin: boolean;
            portPreservation: boolean;
            icmpErrors: boolean;
            mappingTimeout?: number;
            json?: boolean;
            lab?: string;
          },
        ) => {
          requireLab();
          const l = currentLab(opts.lab);
          const nat = await l.setNat(router, {
            type,
            stealth: Boolean(opts.stealth),
            hairpin: opts.hairpin,
            portPreservation: opts.portPreservation,
            forwardIcmpErrors: opts.icmpErrors,
            ...(opts.mappingTimeout !== undefined ? { mappingTimeoutSec: opts.mappingTimeout } : {}),
          });
          if (opts.json) printEvent('nat', { router, ...nat });
          else progress(false, genericLine({ time: '', event: router, ...nat }));
        },
      ),
    );

  addLinkShapeFlags(
    lab
      .command('link')
      .description(
        "change a link's conditions while the lab runs (links are named after their lower node: a, natA, ...)",
      )
      .argument('<link>', 'natA, natB, server, a, a2, b (cgn, natC, c with --double-nat)'),
    'on this link',
  )
    .option('--lab <id>', 'lab id (default: the lab started with `natpunch lab up`)')
    .option('--json', 'the link conditions now in force as a JSON line')
    .action(
      action(async (link: string, opts: LinkShapeFlags & { lab?: string; json?: boolean }) => {
        requireLab();
        const l = currentLab(opts.lab);
        const shape = await l.setLink(link, linkShape(opts));
        if (opts.json) return printEvent('link', { link, ...shape });
        progress(
          false,
          `link ${link}: delay ${shape.delayMs} ms ±${shape.jitterMs}, loss ${shape.lossPct}%, rate ${shape.rateMbit || '∞'} Mbit/s`,
        );
      }),
    );

  lab
    .command('status')
    .description('show the running lab: hosts, addresses, NAT types, link conditions')
    .option('--lab <id>', 'lab id (default: the lab started with `natpunch lab up`)')
    .option('--json', 'print as JSON')
    .action(
      action(async (opts: { lab?: string; json?: boolean }) => {
        requireLab();
        const all = Lab.list();
        if (opts.json && !opts.lab) {
          printEvent('labs', {
            labs: all.map((s) => ({ ...summary(s), cli: s.detached, ownerAlive: Lab.ownerAlive(s), ready: s.ready })),
          });
          return;
        }
        const l = currentLab(opts.lab);
        if (opts.json) printEvent('lab', summary(l.state));
        else {
          printHuman(l.state);
          const others = all.filter((s) => s.id !== l.id).length;
          if (others)
            progress(
              false,
              `(${others} other lab(s) on this machine, e.g. from tests; \`natpunch lab status --json\` lists all)`,
            );
        }
      }),
    );

  lab
    .command('down')
    .description('stop the lab started with `natpunch lab up`; --all also removes leftovers of crashed runs')
    .option('--lab <id>', 'lab id (default: the lab started with `natpunch lab up`)')
    .option('--all', 'remove every CLI lab and every lab whose owning process has died')
    .option('--json', 'the labs removed as a JSON line')
    .action(
      action(async (opts: { lab?: string; all?: boolean; json?: boolean }) => {
        requireLab();
        if (opts.all) {
          const removed = await Lab.cleanupAll();
          if (opts.json) printEvent('down', { labs: removed });
          else progress(false, removed.length ? `removed lab(s): ${removed.join(', ')}` : 'nothing to remove');
          return;
        }
        const l = currentLab(opts.lab);
        await l.down();
        if (opts.json) printEvent('down', { labs: [l.id] });
        else progress(false, `lab ${l.id} is down`);
      }),
    );
}
