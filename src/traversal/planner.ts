/**
 * How natpunch chooses a technique. Read this file to learn it; race.ts only executes what plan() returns.
 *
 * Both sides call plan() with their own view first and the peer's second, from the same two NAT views (ours measured
 * on the Endpoint's socket, the peer's read from the candidates the rendezvous carried), so both reach the same plan
 * without talking. The plan is a race with hold-back times, happy-eyeballs style (RFC 8305 §5): every step starts
 * after its hold-back unless a path was already found; the first authenticated path wins; steps with a lower
 * preference that find a path wait `graceMs` for a better one still running.
 *
 *   same public address      both behind one NAT: 'udp-checks' (host candidates: the LAN path; hairpin otherwise)
 *   a side holds a mapping   'mapped': the checks reach its gateway mapping (PCP / NAT-PMP / UPnP IGD) like a full
 *                            cone; no hard punch needed
 *   cone ↔ cone              'udp-checks' only (ICE-style checks, RFC 8445 §7)
 *   sequential ↔ cone|seq.   'predict' (hard punch aiming at the predicted window) replaces the checks: checks to
 *                            other candidates would take the ports the window predicts
 *   random ↔ cone            'udp-checks' (enough when the cone filters by address only) and, beside them,
 *                            'birthday' (256 sockets × 1750 probes, P(hit) 0.999, birthday.ts): most cones filter by
 *                            address and port, where the checks never meet. An unmeasured side (a cold connector
 *                            introduced before its measurement) counts as a cone at its server-reflexive address.
 *                            The initiator carries Noise IK in the birthday's checks, not the plain ones (IK rides
 *                            on one technique only, docs/handshake.md)
 *   random ↔ random|seq.     no direct path without an opt-in probe budget ('double-random'); the relay carries it
 *   relay                    whenever either side offers a relayed candidate: at once when no direct technique
 *                            applies or a side's UDP is blocked, else after the direct techniques had their time
 *   tcp                      when both sides offer TCP candidates, in parallel (after prediction when that runs:
 *                            its SYNs would take predicted ports); a UDP path found within TCP_GRACE_MS of TCP's is
 *                            preferred (it can migrate, no head-of-line blocking)
 *   no rendezvous answered   no introduction, so no candidates and nothing above can run: 'icmp' (pwnat: forged ICMP
 *                            Time Exceeded to the peer's public address, icmp-technique.ts) when the caller allows it
 *                            (gave that address and can open raw sockets); otherwise nothing
 *
 * The techniques themselves live one per file (udp-checks.ts, hard-punch.ts, relay-technique.ts, tcp-technique.ts,
 * icmp-technique.ts).
 */
import type { Applicability, NatView, TechniqueName } from './technique.js';
import { tcpApplies } from './tcp-technique.js';

/** Techniques listed in preference order: a lower number wins when two find a path within the grace time. */
const PREFERENCE: Record<TechniqueName, number> = {
  'udp-checks': 0,
  mapped: 0,
  predict: 0,
  birthday: 0,
  'double-random': 0,
  tcp: 1,
  relay: 2,
  icmp: 3,
};

/**
 * random ↔ cone: the birthday's head-start for the plain checks: none. Both start at once, the initiator's Noise IK
 * rides on the birthday's checks (src/endpoint/attempt.ts ikTechnique), and where the plain checks also meet (a cone
 * that filters by address alone) the two sides still end on one path: the listener's race ends with the first
 * session it completes, and when that is the birthday's IK session, its message 2 makes the connector take the claim
 * from a plain-checks XX handshake in progress (race.ts claim(decided)). Before that preemption both sides could keep
 * different sessions (full-cone ↔ random failed 2 of 5 clean lab trials), and the birthday was held back 300 ms,
 * which a port-restricted cone, where only the birthday meets (the common case, RFC 4787 §5), paid on every connect.
 */
export const BIRTHDAY_HOLD_MS = 0;
/** The relay's head start for the direct techniques when only the checks run: a pair that works answers within a
 *  couple of round trips; checks retransmit (RFC 8445 §14.3), so a lost packet costs ≤ 0.4 s (checks.ts). */
export const RELAY_HOLD_MS = 1_500;
/** ... and when a hard punch runs: prediction meets in ~1.4 s in the lab, birthday needs 1750 probes at 1000/s. */
export const RELAY_HOLD_HARD_MS = 4_000;
/** With prediction running, TCP starts this late (prediction meets within ~1.5 s in the lab; PREDICT_ROUND_MS
 *  rounds of probes, birthday.ts). */
export const TCP_AFTER_PREDICT_MS = 2_500;
/** TCP found a path: wait this long for a UDP one before settling for TCP. */
export const TCP_GRACE_MS = 1_000;

export interface PlanStep {
  technique: TechniqueName;
  /** Start this long after the introduction (unless a path was found by then). */
  holdMs: number;
  /** Lower is better (see PREFERENCE). */
  preference: number;
  /** Having found a path, wait at most this long for a better-preference step still running. */
  graceMs: number;
  /** Why the planner chose it (for logs, progress and the error when nothing works). */
  why: string;
}

export interface Plan {
  steps: PlanStep[];
  /** Techniques left out, and why (the failure message lists them with what would help). */
  skipped: Array<{ technique: TechniqueName; why: string }>;
}

/** The caller's switches: each technique is on unless turned off (defaults: src/endpoint/defaults.ts). */
export interface PlanSwitches {
  hardNat: boolean;
  /** A double-random probe budget was given (random ↔ random and random ↔ sequential become possible). */
  budget: boolean;
  relay: boolean;
  /** 'udp' leaves TCP out; 'tcp' runs TCP only. */
  transport: 'udp' | 'tcp' | 'auto';
  /** The caller allows ICMP hole punching (it named the peer's public address; it needs raw sockets). Default false. */
  icmp?: boolean;
  /** The rendezvous answered (an introduction is in hand). Default true; false: only 'icmp' can run. */
  rendezvous?: boolean;
  /**
   * Which side asked for the introduction (the connector). An unmeasured connector is usually a cold one still
   * measuring (see birthdayWithUnmeasured); an unmeasured listener never measured. Default: not known.
   */
  initiator?: 'local' | 'remote';
}

export const ALL_ON: PlanSwitches = { hardNat: true, budget: false, relay: true, transport: 'auto' };

/** Whether a hard punch can find a path between two mapping kinds, and which one (birthday.ts planHardPunch). */
export function hardTechnique(
  local: NatView['kind'],
  remote: NatView['kind'],
  budget: boolean,
): TechniqueName | { skip: string } {
  const kinds = [local, remote];
  const random = kinds.filter((k) => k === 'random').length;
  const sequential = kinds.filter((k) => k === 'sequential').length;
  if (random === 0 && sequential === 0) return { skip: 'no side is symmetric (plain checks suffice)' };
  if (random === 2 || (random === 1 && sequential === 1)) {
    return budget
      ? 'double-random'
      : {
          skip: `${local} ↔ ${remote}: no predictable mapping on either side; needs a double-random probe budget (--budget) or a relay`,
        };
  }
  return random === 1 ? 'birthday' : 'predict';
}

/** applies() of the techniques, in one place so plan() and each technique module agree. */
export function applies(
  technique: TechniqueName,
  local: NatView,
  remote: NatView,
  sw: PlanSwitches = ALL_ON,
): Applicability {
  switch (technique) {
    case 'relay':
      if (!sw.relay) return { skip: 'turned off (--no-relay)' };
      return local.relay || remote.relay
        ? true
        : {
            skip: 'neither side has a relay allocation (the rendezvous offered none: run it with `natpunch serve`, which relays for its peers)',
          };
    case 'tcp':
      if (sw.transport === 'udp') return { skip: 'turned off (--transport udp)' };
      // Both sides offer TCP, and one NAT maps endpoint-independently (two per-destination NATs leave no port to aim
      // at, and the SYNs would use up ports the UDP window counts on): tcp-technique.ts decides.
      return tcpApplies(local, remote);
    case 'mapped':
      return local.mapped || remote.mapped
        ? true
        : { skip: 'neither gateway mapped a port (PCP / NAT-PMP / UPnP IGD unavailable, or --no-port-mapping)' };
    case 'predict':
    case 'birthday':
    case 'double-random': {
      if (!sw.hardNat) return { skip: 'turned off (--no-hard-nat)' };
      if (technique === 'birthday' && birthdayWithUnmeasured(local, remote, sw)) return true;
      if (local.kind === 'unknown' || remote.kind === 'unknown')
        return { skip: `${local.kind === 'unknown' ? 'our' : "the peer's"} NAT was not measured` };
      const t = hardTechnique(local.kind, remote.kind, sw.budget);
      if (typeof t !== 'string') return t;
      return t === technique ? true : { skip: `${local.kind} ↔ ${remote.kind} calls for ${t}` };
    }
    case 'udp-checks':
      return true;
    case 'icmp':
      if (sw.rendezvous !== false) return { skip: 'only when the rendezvous cannot be reached' };
      return sw.icmp
        ? true
        : {
            skip: "not allowed: give the peer's public address (connect --icmp ADDRESS; needs root / CAP_NET_RAW)",
          };
  }
}

/**
 * A random listener ↔ a connector that had not measured its NAT when it asked (a cold connector is introduced before
 * its measurement is in): the birthday runs as if the connector were a cone at its server-reflexive address. The
 * listener opens its sockets toward that address; the connector sprays once its measurement says cone. So the pair
 * most NATs make with a random one needs no second introduction (src/endpoint/endpoint.ts). Not the other way
 * round: an unmeasured listener never measured, and would not take part. Both sides need UDP.
 */
export function birthdayWithUnmeasured(local: NatView, remote: NatView, sw: PlanSwitches = ALL_ON): boolean {
  if (!local.udp || !remote.udp) return false;
  return (
    (local.kind === 'random' && remote.kind === 'unknown' && sw.initiator === 'remote') ||
    (local.kind === 'unknown' && remote.kind === 'random' && sw.initiator === 'local')
  );
}

function sameNat(local: NatView, remote: NatView): boolean {
  return local.publicAddress !== null && local.publicAddress === remote.publicAddress;
}

/** The plan for one connection between `local` and `remote` (see the table at the top). */
export function plan(local: NatView, remote: NatView, sw: PlanSwitches = ALL_ON): Plan {
  const steps: PlanStep[] = [];
  const skipped: Plan['skipped'] = [];
  const add = (technique: TechniqueName, holdMs: number, why: string, graceMs = 0) =>
    steps.push({ technique, holdMs, preference: PREFERENCE[technique], graceMs, why });
  const skip = (technique: TechniqueName, why: string) => skipped.push({ technique, why });
  const tcpOnly = sw.transport === 'tcp';
  let direct = false;
  let hard = false;

  if (sw.rendezvous === false) {
    // No introduction: no candidates, no NAT views, nothing to check or relay. Only ICMP needs none of it.
    const icmp = applies('icmp', local, remote, sw);
    if (icmp === true)
      add('icmp', 0, "the rendezvous cannot be reached: ICMP hole punching to the peer's public address (pwnat)");
    else skip('icmp', icmp.skip);
    skip('udp-checks', 'the rendezvous cannot be reached: no introduction, no candidates');
    skip('relay', 'the rendezvous cannot be reached: no relay credentials');
    return { steps, skipped };
  }

  if (!tcpOnly) {
    if (sameNat(local, remote)) {
      add('udp-checks', 0, 'both sides share a public address: the LAN path (or hairpin) through plain checks');
      direct = true;
      skip('predict', 'same NAT: not needed');
    } else if (local.mapped || remote.mapped) {
      add('mapped', 0, `${local.mapped ? 'our' : "the peer's"} gateway mapped a port: reachable like a full cone`);
      direct = true;
    } else {
      const t = hardTechnique(local.kind, remote.kind, sw.budget);
      const h = applies(typeof t === 'string' ? t : 'predict', local, remote, sw);
      if (typeof t === 'string' && h === true) {
        hard = true;
        direct = true;
        if (t === 'birthday') {
          add('udp-checks', 0, 'random ↔ cone: enough when the cone filters by address only');
          add(
            'birthday',
            BIRTHDAY_HOLD_MS,
            `${local.kind} ↔ ${remote.kind}: birthday punch (the cone side sprays, the random side opens sockets)`,
          );
        } else {
          add(
            t,
            0,
            `${local.kind} ↔ ${remote.kind}: ${t === 'predict' ? 'port prediction replaces the checks (they would take predicted ports)' : 'the opt-in double-random budget'}`,
          );
        }
      } else {
        const unpunchable = typeof t !== 'string' && (local.kind === 'random' || remote.kind === 'random');
        if (typeof t !== 'string') skip('predict', t.skip);
        else if (h !== true) skip(t, h.skip);
        if (unpunchable) {
          skip('udp-checks', `${local.kind} ↔ ${remote.kind}: plain checks cannot meet`);
        } else {
          add(
            'udp-checks',
            0,
            local.kind === 'unknown' || remote.kind === 'unknown'
              ? 'NAT kinds not both known: plain checks'
              : 'cone ↔ cone: plain checks',
          );
          direct = true;
        }
      }
    }
  }

  const tcp = applies('tcp', local, remote, sw);
  // Prediction counts on the NAT's next ports: TCP SYNs beside it would take them (a sequential NAT may share one
  // counter between TCP and UDP), so TCP waits until prediction had its time.
  const predicting = steps.some((s) => s.technique === 'predict');
  if (tcp === true)
    add(
      'tcp',
      predicting ? TCP_AFTER_PREDICT_MS : 0,
      tcpOnly
        ? 'TCP requested'
        : predicting
          ? 'after prediction (its SYNs would take predicted ports)'
          : 'both sides offer TCP: simultaneous open in parallel',
      direct ? TCP_GRACE_MS : 0,
    );
  else skip('tcp', tcp.skip);

  const relay = applies('relay', local, remote, sw);
  if (relay === true && !tcpOnly) {
    const blocked = !local.udp || !remote.udp;
    const hold = !direct || blocked ? 0 : hard ? RELAY_HOLD_HARD_MS : RELAY_HOLD_MS;
    add(
      'relay',
      hold,
      hold === 0
        ? blocked
          ? "a side's UDP is blocked: relay at once"
          : 'no direct technique applies: relay at once'
        : 'fallback after the direct techniques had their time',
    );
  } else if (relay !== true) {
    skip('relay', relay.skip);
  }
  // Allowed but not needed: the failure message says why ICMP did not run.
  if (sw.icmp) skip('icmp', 'only when the rendezvous cannot be reached');
  return { steps, skipped };
}

/** What would have helped, for the error when every step failed (one sentence per suggestion). */
export function advice(local: NatView, remote: NatView, p: Plan, sw: PlanSwitches): string[] {
  const out: string[] = [];
  const has = (t: TechniqueName) => p.steps.some((s) => s.technique === t);
  if (!has('relay')) {
    out.push(
      sw.relay
        ? 'a relay would carry this pair: run the rendezvous with `natpunch serve` (it relays between its registered peers by default)'
        : 'turning the relay back on (drop --no-relay) would carry this pair',
    );
  }
  if (
    !sw.hardNat &&
    (local.kind === 'sequential' || local.kind === 'random' || remote.kind === 'sequential' || remote.kind === 'random')
  ) {
    out.push('hard-NAT punching is off (--no-hard-nat); turning it on may find a direct path');
  }
  if ((local.kind === 'random' || remote.kind === 'random') && !sw.budget && !has('relay')) {
    out.push('a double-random probe budget (--budget) gives a small chance of a direct path');
  }
  if (!local.mapped && !remote.mapped)
    out.push('a gateway with PCP, NAT-PMP or UPnP IGD enabled on either side would make it reachable');
  return out;
}
