// A Node.js client of remotemedia.v1 on @grpc/grpc-js, written from the .proto files
// alone: streams three texts through a PassThrough session, executes a pipeline once,
// and prints what it saw as one JSON line for the Python test to check.
//
//     node client.mjs HOST:PORT PROTO_ROOT
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const [address, protoRoot] = process.argv.slice(2);
const definition = protoLoader.loadSync(
  ["remotemedia/v1/streaming.proto", "remotemedia/v1/execution.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: Number, defaults: false, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).remotemedia.v1;
const credentials = grpc.credentials.createInsecure();
const manifest = {
  version: "v1",
  metadata: { name: "node" },
  nodes: [{ id: "pass", node_type: "PassThrough", params: "{}" }],
};
const text = (value) => ({ text: { text_data: Buffer.from(value), encoding: "utf-8" } });

function stream() {
  const client = new v1.StreamingPipelineService(address, credentials);
  return new Promise((resolve, reject) => {
    const call = client.StreamPipeline({ deadline: Date.now() + 30000 });
    const seen = [];
    call.on("data", (response) => {
      const kind = response.response;
      if (kind === "result" && "_status" in response.result.data_outputs) return;
      if (kind === "result") {
        const output = response.result.data_outputs.pass;
        seen.push({ kind, sequence: response.result.sequence, text: output.text.text_data.toString() });
      } else if (kind === "ready") {
        seen.push({ kind });
        for (const sequence of [5, 6, 7]) {
          call.write({ data_chunk: { node_id: "pass", buffer: text(`chunk ${sequence}`), sequence } });
        }
        call.write({ control: { command: "COMMAND_CLOSE" } });
        call.end();
      } else {
        seen.push({ kind, reason: response.closed?.reason, error: response.error?.message });
      }
    });
    call.on("error", reject);
    call.on("status", (status) => {
      client.close();
      resolve({ responses: seen, code: status.code });
    });
    call.write({ init: { manifest, client_version: "v1" } });
  });
}

function execute() {
  const client = new v1.PipelineExecutionService(address, credentials);
  return new Promise((resolve, reject) => {
    client.ExecutePipeline(
      { manifest, data_inputs: { pass: text("once") }, client_version: "v1" },
      { deadline: Date.now() + 30000 },
      (error, response) => {
        client.close();
        if (error) reject(error);
        else resolve(response.result.data_outputs.pass.text.text_data.toString());
      },
    );
  });
}

try {
  const streamed = await stream();
  const executed = await execute();
  console.log(JSON.stringify({ streamed, executed }));
} catch (error) {
  console.log(JSON.stringify({ error: `${error.code}: ${error.details ?? error.message}` }));
  process.exitCode = 1;
}
