package dev.llmops.examples;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.util.Iterator;
import java.util.concurrent.TimeUnit;
import llmops.inference.v1.GenerateStreamRequest;
import llmops.inference.v1.GenerateStreamResponse;
import llmops.inference.v1.InferenceServiceGrpc;
import llmops.inference.v1.PredictRequest;
import llmops.inference.v1.PredictResponse;

/**
 * Calls the gateway's llmops.inference.v1.InferenceService with an API key: Predict for --text, and
 * GenerateStream for --prompt (a model of kind causal_lm). TLS with --ca-cert, or --plaintext for
 * a local gateway without TLS.
 */
public final class PredictClient {
  public static void main(String[] argv) throws Exception {
    Args args = new Args(argv, "--plaintext");
    ChannelCredentials credentials = args.flag("--plaintext")
        ? InsecureChannelCredentials.create()
        : args.get("--ca-cert", "").isEmpty()
            ? TlsChannelCredentials.create()
            : TlsChannelCredentials.newBuilder().trustManager(new File(args.get("--ca-cert", ""))).build();
    String key = args.get("--key", System.getenv().getOrDefault("LLMOPS_API_KEY", ""));
    if (key.isEmpty()) {
      throw new IllegalArgumentException("--key (or LLMOPS_API_KEY) is required");
    }
    Metadata headers = new Metadata();
    headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + key);
    long timeout = Long.parseLong(args.get("--timeout", "30"));

    ManagedChannel channel = Grpc.newChannelBuilder(args.get("--address", "127.0.0.1:50051"), credentials).build();
    try {
      InferenceServiceGrpc.InferenceServiceBlockingStub stub = InferenceServiceGrpc.newBlockingStub(channel)
          .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
      if (!args.get("--text", "").isEmpty()) {
        PredictResponse answer = stub.withDeadlineAfter(timeout, TimeUnit.SECONDS).predict(PredictRequest.newBuilder()
            .setText(args.get("--text", ""))
            .setModel(args.get("--model", ""))
            .setTenant(args.get("--tenant", "acme"))
            .build());
        System.out.printf("{\"label\": \"%s\", \"confidence\": %.4f, \"model\": \"%s\", \"version\": %d,"
                + " \"request_id\": \"%s\"}%n", answer.getLabel(), answer.getConfidence(), answer.getModelName(),
            answer.getModelVersion(), answer.getRequestId());
      }
      if (!args.get("--prompt", "").isEmpty()) {
        GenerateStreamRequest.Builder request = GenerateStreamRequest.newBuilder()
            .setPrompt(args.get("--prompt", ""))
            .setModel(args.get("--generate-model", ""))
            .setTenant(args.get("--tenant", "acme"))
            .setMaxTokens(Integer.parseInt(args.get("--max-tokens", "16")));
        Iterator<GenerateStreamResponse> stream =
            stub.withDeadlineAfter(timeout, TimeUnit.SECONDS).generateStream(request.build());
        int messages = 0;
        while (stream.hasNext()) {
          GenerateStreamResponse chunk = stream.next();
          messages++;
          System.out.print(chunk.getText());
          if (!chunk.getFinishReason().isEmpty()) {
            System.out.printf("%n[%s v%d: %s, %d messages, %d completion tokens]%n", chunk.getModelName(),
                chunk.getModelVersion(), chunk.getFinishReason(), messages, chunk.getUsage().getCompletionTokens());
          }
        }
      }
    } catch (StatusRuntimeException error) {
      System.err.println("error: " + error.getStatus().getCode() + ": " + error.getStatus().getDescription());
      System.exit(1);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }
}
