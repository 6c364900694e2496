import { Lab } from '/work/wt/seqtcp/src/lab/index.js';
const TCP = '/work/wt/seqtcp/test/lab/fixtures/tcp-peer.ts';
const SEQ = '/work/wt/seqtcp/test/lab/fixtures/tcp-seq-peer.ts';
const technique = process.argv[2] ?? 'natblaster';
const natOpt = JSON.parse(process.argv[3] ?? '"port-restricted-cone"');
const lab = await Lab.up({ nat: { natA: natOpt, natB: natOpt } });
try {
  const refl = lab.node('server', TCP, ['reflect']);
  const port = Number((await refl.next((m) => m.type === 'ready')).port);
  let spoofer;
  if (technique === 'stunt1') { spoofer = lab.node('server', SEQ, ['spoof']); await spoofer.next((m) => m.type === 'ready'); }
  const pa = lab.node('a', SEQ, ['peer', 'a', lab.addr('server'), String(port)]);
  const pb = lab.node('b', SEQ, ['peer', 'b', lab.addr('server'), String(port)]);
  const ma = await pa.next((m) => m.type === 'mapped' || m.type === 'failed', { timeoutMs: 20000 });
  const mb = await pb.next((m) => m.type === 'mapped' || m.type === 'failed', { timeoutMs: 20000 });
  console.log(ma, mb);
  pa.send({ type: 'run', technique, remote: { address: mb.address, port: mb.port } });
  pb.send({ type: 'run', technique, remote: { address: ma.address, port: ma.port } });
  const oa = await pa.next((m) => m.type === 'offer' || m.type === 'failed', { timeoutMs: 20000 });
  const ob = await pb.next((m) => m.type === 'offer' || m.type === 'failed', { timeoutMs: 20000 });
  console.log(JSON.stringify(oa), JSON.stringify(ob));
  if (technique === 'stunt1') { spoofer!.send({ type: 'spoof', a: oa.offer, b: ob.offer }); }
  else { pa.send({ type: 'peer-offer', offer: ob.offer }); pb.send({ type: 'peer-offer', offer: oa.offer }); }
  const ra = pa.next((m) => m.type === 'connected' || m.type === 'failed', { timeoutMs: 20000 });
  const rb = pb.next((m) => m.type === 'connected' || m.type === 'failed', { timeoutMs: 20000 });
  console.log(await ra, await rb);
  console.log(await pa.next((m) => m.type === 'data' || m.type === 'failed').catch(e => String(e)), await pb.next((m) => m.type === 'data' || m.type === 'failed').catch(e=>String(e)));
  console.log((await lab.exec('natA', ['conntrack', '-L', '-p', 'tcp'])).stdout);
  console.log((await lab.exec('natB', ['conntrack', '-L', '-p', 'tcp'])).stdout);
} finally { await lab.down(); }
