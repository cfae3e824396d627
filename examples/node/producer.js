// Sends one record (llmops.record.submitted.v1) and one piece of feedback (llmops.feedback.submitted.v1)
// in CloudEvents structured mode, keyed as contracts/asyncapi.yaml says, and prints the two event ids.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { Kafka, logLevel } = require('kafkajs');

const RECORDS_TOPIC = 'llmops.records.raw.v1';
const FEEDBACK_TOPIC = 'llmops.feedback.v1';
const STRUCTURED = 'application/cloudevents+json';

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string', default: '127.0.0.1:9092' },
    tenant: { type: 'string', default: 'acme' },
    text: { type: 'string', default: 'My new card has not arrived yet.' },
    label: { type: 'string', default: 'card_arrival' },
    'record-id': { type: 'string', default: `node-${crypto.randomUUID()}` },
    'request-id': { type: 'string', default: `node-request-${crypto.randomUUID()}` },
    'sasl-username': { type: 'string', default: '' },
    'sasl-mechanism': { type: 'string', default: 'SCRAM-SHA-512' },
    'sasl-password-file': { type: 'string', default: '' },
    'ca-cert': { type: 'string', default: '' },
  },
});

// One structured-mode CloudEvent, acknowledged by every in-sync replica; returns its id.
async function send(producer, topic, key, type, data) {
  const id = crypto.randomUUID();
  const event = {
    specversion: '1.0',
    id,
    source: '/examples/node',
    type,
    time: new Date().toISOString(),
    datacontenttype: 'application/json',
    data,
  };
  const [written] = await producer.send({
    topic,
    acks: -1,
    messages: [{ key, value: JSON.stringify(event), headers: { 'content-type': STRUCTURED } }],
  });
  console.error(`sent ${type} to ${written.topicName}-${written.partition}@${written.baseOffset}`);
  return id;
}

async function main() {
  const kafka = new Kafka({
    clientId: 'llmops-node-example',
    brokers: args.bootstrap.split(','),
    ssl: args['ca-cert'] ? { ca: [fs.readFileSync(args['ca-cert'], 'utf8')] } : undefined,
    sasl: args['sasl-username']
      ? {
          mechanism: args['sasl-mechanism'].toLowerCase(), // scram-sha-512, scram-sha-256 or plain
          username: args['sasl-username'],
          password: fs.readFileSync(args['sasl-password-file'], 'utf8').trim(),
        }
      : undefined,
    logLevel: logLevel.ERROR,
  });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    const record = {
      tenant: args.tenant,
      source: 'node-example',
      text: args.text,
      record_id: args['record-id'],
      label: args.label,
    };
    const recordEventId = await send(producer, RECORDS_TOPIC, args['record-id'], 'llmops.record.submitted.v1', record);
    const feedback = { request_id: args['request-id'], true_label: args.label };
    const feedbackEventId = await send(producer, FEEDBACK_TOPIC, args['request-id'], 'llmops.feedback.submitted.v1', feedback);
    console.log(JSON.stringify({ record_event_id: recordEventId, feedback_event_id: feedbackEventId }));
  } finally {
    await producer.disconnect();
  }
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
