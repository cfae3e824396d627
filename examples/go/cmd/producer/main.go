// Command producer sends one record (llmops.record.submitted.v1) and one piece of feedback
// (llmops.feedback.submitted.v1) in CloudEvents structured mode, keyed as contracts/asyncapi.yaml
// says, and prints the two event ids as JSON.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const (
	recordsTopic  = "llmops.records.raw.v1"
	feedbackTopic = "llmops.feedback.v1"
	structured    = "application/cloudevents+json"
)

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
	tenant := flag.String("tenant", "acme", "the record's tenant")
	text := flag.String("text", "My new card has not arrived yet.", "the record's text")
	label := flag.String("label", "card_arrival", "the record's label, and the feedback's true label")
	recordID := flag.String("record-id", "go-"+newID(), "the record's id (its Kafka key)")
	requestID := flag.String("request-id", "go-request-"+newID(), "the served request the feedback is about")
	user := flag.String("sasl-username", "", "SASL/SCRAM user (a secured cluster)")
	mechanism := flag.String("sasl-mechanism", "SCRAM-SHA-512", "SCRAM-SHA-512 or SCRAM-SHA-256")
	passwordFile := flag.String("sasl-password-file", "", "file holding the SASL password")
	caCert := flag.String("ca-cert", "", "CA (PEM) of the brokers' TLS certificates; enables TLS")
	flag.Parse()

	options := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(*bootstrap, ",")...),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent by default in franz-go
		kgo.ProduceRequestTimeout(30 * time.Second),
		// franz-go compresses with snappy by default; the platform's consumers (aiokafka) read
		// uncompressed and gzip batches without extra libraries.
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	}
	if *caCert != "" {
		pem, err := os.ReadFile(*caCert)
		check(err)
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("no certificate in %s", *caCert)
		}
		options = append(options, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	if *user != "" {
		password, err := os.ReadFile(*passwordFile)
		check(err)
		auth := scram.Auth{User: *user, Pass: strings.TrimSpace(string(password))}
		if *mechanism == "SCRAM-SHA-256" {
			options = append(options, kgo.SASL(auth.AsSha256Mechanism()))
		} else {
			options = append(options, kgo.SASL(auth.AsSha512Mechanism()))
		}
	}
	client, err := kgo.NewClient(options...)
	check(err)
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	record := map[string]any{"tenant": *tenant, "source": "go-example", "text": *text, "record_id": *recordID, "label": *label}
	recordEvent := send(ctx, client, recordsTopic, *recordID, "llmops.record.submitted.v1", record)
	feedback := map[string]any{"request_id": *requestID, "true_label": *label}
	feedbackEvent := send(ctx, client, feedbackTopic, *requestID, "llmops.feedback.submitted.v1", feedback)
	fmt.Printf("{\"record_event_id\": %q, \"feedback_event_id\": %q}\n", recordEvent, feedbackEvent)
}

// send writes one structured-mode CloudEvent and waits for every in-sync replica; returns its id.
func send(ctx context.Context, client *kgo.Client, topic, key, eventType string, data map[string]any) string {
	id := newID()
	event := map[string]any{
		"specversion":     "1.0",
		"id":              id,
		"source":          "/examples/go",
		"type":            eventType,
		"time":            time.Now().UTC().Format(time.RFC3339Nano),
		"datacontenttype": "application/json",
		"data":            data,
	}
	value, err := json.Marshal(event)
	check(err)
	record := &kgo.Record{
		Topic:   topic,
		Key:     []byte(key),
		Value:   value,
		Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte(structured)}},
	}
	written, err := client.ProduceSync(ctx, record).First()
	check(err)
	log.Printf("sent %s to %s-%d@%d", eventType, written.Topic, written.Partition, written.Offset)
	return id
}

// newID is a random (version 4) UUID.
func newID() string {
	b := make([]byte, 16)
	_, err := rand.Read(b)
	check(err)
	b[6], b[8] = (b[6]&0x0f)|0x40, (b[8]&0x3f)|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
