// tools/ort_run.js: runs an ONNX model in ONNX Runtime (the npm package onnxruntime-node, CPU) on
// one float32 input, for the export tests and benchmarks (issue #31).
//
//   node tools/ort_run.js MODEL.onnx INPUT.bin B,C,H,W OUTPUT.bin [THREADS] [REPEAT]
//
// INPUT.bin and OUTPUT.bin are raw little-endian float32 (the output: the model's first output).
// NODE_PATH must reach onnxruntime-node (scripts/setup.sh installs it under build/ort/node_modules).
// With REPEAT > 1 it prints the median milliseconds of REPEAT runs after 3 warm-up runs.
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, input, dims, output, threads = '0', repeat = '1'] = process.argv.slice(2);
  if (!output) {
    console.error('usage: node tools/ort_run.js MODEL.onnx INPUT.bin B,C,H,W OUTPUT.bin [THREADS] [REPEAT]');
    process.exit(2);
  }
  const shape = dims.split(',').map(Number);
  const buf = fs.readFileSync(input);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const options = { graphOptimizationLevel: 'all' };
  if (Number(threads) > 0) { options.intraOpNumThreads = Number(threads); options.interOpNumThreads = 1; }
  const session = await ort.InferenceSession.create(model, options);
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor('float32', data, shape);
  let result = await session.run(feeds);
  const n = Number(repeat);
  if (n > 1) {
    for (let i = 0; i < 3; ++i) await session.run(feeds);
    const times = [];
    for (let i = 0; i < n; ++i) {
      const t0 = process.hrtime.bigint();
      result = await session.run(feeds);
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    console.log(JSON.stringify({ median_ms: times[Math.floor(n / 2)], min_ms: times[0], max_ms: times[n - 1] }));
  }
  const out = result[session.outputNames[0]].data;
  fs.writeFileSync(output, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
}

main().catch((e) => { console.error('ort_run: ' + e.message); process.exit(1); });
