// Public surface of the publish folder: topics, payload contracts, outbox, seq, MQTT publisher, embedded broker.
// Loaded first: turns off mqtt-packet's 6 MB number cache before any packet is written.
export { mqttNumberCacheEnabled } from './mqtt-packet-numbers.js';
export { topicsFor, defaultBaseTopic, validateBaseTopic, validateSourceId, TopicError, type Topics } from './topics.js';
export {
  buildResult,
  validateResult,
  PayloadError,
  type Result,
  type Result as ResultPayload,
  type ResultInput,
  type ResultLabel,
  type Precision,
  type StatusPayload,
  type StatusState,
  type ResponsePayload,
  type Validation,
} from './payload.js';
export {
  Outbox,
  type OutboxOptions,
  type OutboxEntry,
  type OutboxEntryInput,
  type OutboxDrop,
  type DropReason,
  type Qos,
} from './outbox.js';
export { SeqStore, type PendingResults } from './seq.js';
export {
  MqttPublisher,
  type MqttPublisherOptions,
  type PublisherStats,
  type RequestHandler,
  type MessageHandler,
  type MessageProperties,
  type PublishProperties,
} from './mqtt.js';
export { startEmbeddedBroker, type EmbeddedBroker, type EmbeddedBrokerOptions } from './embedded-broker.js';
export { tlsFailure } from './tls.js';
