package dev.llmops.examples;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends one record (llmops.record.submitted.v1) and one piece of feedback (llmops.feedback.submitted.v1)
 * in CloudEvents structured mode: the whole event is one JSON document, content-type
 * application/cloudevents+json, keyed as contracts/asyncapi.yaml says. Prints the two event ids.
 */
public final class RecordProducer {
  static final String RECORDS_TOPIC = "llmops.records.raw.v1";
  static final String FEEDBACK_TOPIC = "llmops.feedback.v1";
  static final String STRUCTURED = "application/cloudevents+json";
  static final ObjectMapper JSON = new ObjectMapper();

  public static void main(String[] argv) throws Exception {
    Args args = new Args(argv, "--tls");
    String recordId = args.get("--record-id", "java-" + UUID.randomUUID());
    String requestId = args.get("--request-id", "java-request-" + UUID.randomUUID());

    ObjectNode record = JSON.createObjectNode();
    record.put("tenant", args.get("--tenant", "acme"));
    record.put("source", "java-example");
    record.put("text", args.get("--text", "My new card has not arrived yet."));
    record.put("record_id", recordId);
    record.put("label", args.get("--label", "card_arrival"));
    ObjectNode feedback = JSON.createObjectNode();
    feedback.put("request_id", requestId);
    feedback.put("true_label", args.get("--label", "card_arrival"));

    try (KafkaProducer<String, String> producer = new KafkaProducer<>(properties(args))) {
      String recordEvent = send(producer, RECORDS_TOPIC, recordId, "llmops.record.submitted.v1", record);
      String feedbackEvent = send(producer, FEEDBACK_TOPIC, requestId, "llmops.feedback.submitted.v1", feedback);
      System.out.printf("{\"record_event_id\": \"%s\", \"feedback_event_id\": \"%s\"}%n", recordEvent, feedbackEvent);
    }
  }

  /** One structured-mode CloudEvent, sent and acknowledged by every in-sync replica; returns its id. */
  static String send(KafkaProducer<String, String> producer, String topic, String key, String type, ObjectNode data)
      throws Exception {
    String id = UUID.randomUUID().toString();
    ObjectNode event = JSON.createObjectNode();
    event.put("specversion", "1.0");
    event.put("id", id);
    event.put("source", "/examples/java");
    event.put("type", type);
    event.put("time", Instant.now().toString());
    event.put("datacontenttype", "application/json");
    event.set("data", data);
    ProducerRecord<String, String> message = new ProducerRecord<>(topic, key, JSON.writeValueAsString(event));
    message.headers().add("content-type", STRUCTURED.getBytes(StandardCharsets.UTF_8));
    RecordMetadata written = producer.send(message).get();
    System.err.printf("sent %s to %s-%d@%d%n", type, written.topic(), written.partition(), written.offset());
    return id;
  }

  /** Connection options: plaintext for the local stack, SASL/SCRAM and/or TLS for a secured cluster. */
  static Properties properties(Args args) throws Exception {
    Properties properties = new Properties();
    properties.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("--bootstrap", "127.0.0.1:9092"));
    properties.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    properties.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    properties.put(ProducerConfig.ACKS_CONFIG, "all");
    properties.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    properties.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
    properties.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
    String username = args.get("--sasl-username", "");
    boolean tls = args.flag("--tls") || !args.get("--ca-cert", "").isEmpty();
    if (!username.isEmpty()) {
      String password = Files.readString(Path.of(args.require("--sasl-password-file"))).strip();
      properties.put("security.protocol", tls ? "SASL_SSL" : "SASL_PLAINTEXT");
      properties.put("sasl.mechanism", args.get("--sasl-mechanism", "SCRAM-SHA-512"));
      String module = args.get("--sasl-mechanism", "SCRAM-SHA-512").equals("PLAIN")
          ? "org.apache.kafka.common.security.plain.PlainLoginModule"
          : "org.apache.kafka.common.security.scram.ScramLoginModule";
      properties.put("sasl.jaas.config",
          String.format("%s required username=\"%s\" password=\"%s\";", module, username, password));
    } else if (tls) {
      properties.put("security.protocol", "SSL");
    }
    if (!args.get("--ca-cert", "").isEmpty()) {
      properties.put("ssl.truststore.type", "PEM");
      properties.put("ssl.truststore.location", args.get("--ca-cert", ""));
    }
    return properties;
  }
}
