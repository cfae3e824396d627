// Go clients of the platform: a Kafka producer (franz-go) and a gRPC client (grpc-go). The gRPC
// stubs are generated from contracts/proto into build/examples/go/gen by examples/build.sh
// (buf generate with protoc-gen-go and protoc-gen-go-grpc), hence the replace below.
module example.com/llmops-examples

go 1.26.0

require (
	github.com/llmops/llmops/gen/go v0.0.0
	github.com/twmb/franz-go v1.22.3
	google.golang.org/grpc v1.83.2
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
	golang.org/x/net v0.58.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.41.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260526163538-3dc84a4a5aaa // indirect
)

replace github.com/llmops/llmops/gen/go => ../../build/examples/go/gen
