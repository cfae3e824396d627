// Command grpc-client calls the gateway's llmops.inference.v1.InferenceService with an API key:
// Predict for -text, and GenerateStream for -prompt (a model of kind causal_lm). TLS with
// -ca-cert, or -plaintext for a local gateway without TLS.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	inferencev1 "github.com/llmops/llmops/gen/go/llmops/inference/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func main() {
	address := flag.String("address", "127.0.0.1:50051", "the gateway's address")
	key := flag.String("key", os.Getenv("LLMOPS_API_KEY"), "API key (default: $LLMOPS_API_KEY)")
	plaintext := flag.Bool("plaintext", false, "no TLS (a local gateway without TLS)")
	caCert := flag.String("ca-cert", "", "CA (PEM) that signed the gateway's certificate")
	text := flag.String("text", "", "classify this text (Predict)")
	model := flag.String("model", "", "model for Predict; empty: the gateway's default")
	prompt := flag.String("prompt", "", "generate from this prompt (GenerateStream)")
	generateModel := flag.String("generate-model", "", "model for GenerateStream; empty: the gateway's default")
	maxTokens := flag.Int("max-tokens", 16, "most tokens to generate")
	timeout := flag.Int("timeout", 30, "deadline of each call, in seconds")
	flag.Parse()
	if *key == "" {
		log.Fatal("-key (or LLMOPS_API_KEY) is required")
	}

	var creds credentials.TransportCredentials
	switch {
	case *plaintext:
		creds = insecure.NewCredentials()
	case *caCert != "":
		var err error
		creds, err = credentials.NewClientTLSFromFile(*caCert, "")
		check(err)
	default:
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(*address, grpc.WithTransportCredentials(creds))
	check(err)
	defer conn.Close()
	client := inferencev1.NewInferenceServiceClient(conn)
	authorized := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+*key)

	if *text != "" {
		ctx, cancel := context.WithTimeout(authorized, time.Duration(*timeout)*time.Second)
		defer cancel()
		answer, err := client.Predict(ctx, &inferencev1.PredictRequest{Text: *text, Model: *model, Tenant: "acme"})
		check(err)
		fmt.Printf("{\"label\": %q, \"confidence\": %.4f, \"model\": %q, \"version\": %d, \"request_id\": %q}\n",
			answer.GetLabel(), answer.GetConfidence(), answer.GetModelName(), answer.GetModelVersion(), answer.GetRequestId())
	}
	if *prompt != "" {
		ctx, cancel := context.WithTimeout(authorized, time.Duration(*timeout)*time.Second)
		defer cancel()
		stream, err := client.GenerateStream(ctx, &inferencev1.GenerateStreamRequest{
			Prompt: *prompt, Model: *generateModel, Tenant: "acme", MaxTokens: proto.Int32(int32(*maxTokens)),
		})
		check(err)
		for messages := 1; ; messages++ {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			check(err)
			fmt.Print(chunk.GetText())
			if chunk.GetFinishReason() != "" {
				fmt.Printf("\n[%s v%d: %s, %d messages, %d completion tokens]\n", chunk.GetModelName(),
					chunk.GetModelVersion(), chunk.GetFinishReason(), messages, chunk.GetUsage().GetCompletionTokens())
			}
		}
	}
}

// check ends the program on an error; a gRPC status is printed as "CODE: message".
func check(err error) {
	if err == nil {
		return
	}
	if s, ok := status.FromError(err); ok {
		fmt.Fprintf(os.Stderr, "error: %s: %s\n", s.Code(), s.Message())
		os.Exit(1)
	}
	log.Fatal(err)
}
