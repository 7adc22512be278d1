/**
 * MQTT publisher on mqtt.js 5. The Outbox is the single source of truth for Results: a drain loop
 * hands at most `inflightWindow` entries to mqtt.js and acks each outbox entry on PUBACK (or when
 * written, for QoS 0). While offline nothing is handed to mqtt.js, so its unbounded in-memory
 * queues never grow; after a reconnect the drain resumes from the oldest unacknowledged entry.
 * mqtt.js's own replay of in-flight packets is disabled (ConnectionScopedStore) so a reconnect
 * re-sends each unacknowledged entry once, not twice. Delivery is at-least-once, in order of first
 * delivery.
 *
 * Reconnection is driven here, not by mqtt.js (whose `reconnectPeriod` is one fixed interval, so a fleet
 * would reconnect in lockstep after a broker restart): mqtt.js runs with reconnectPeriod 0 and, after each
 * 'close', a timer calls the public `client.reconnect()` after a delay that doubles from reconnectMinMs up
 * to reconnectMaxMs with ±20 % jitter (ReconnectBackoff). A connection that lasted reconnectResetMs
 * starts the next outage at reconnectMinMs again.
 *
 * MQTT 5 (protocolVersion 5) adds: a content type on every JSON message, user properties and a message
 * expiry on Results, a broker-kept session (sessionExpirySec) so requests sent while the daemon restarts
 * are delivered to it afterwards, and request/response by the request's responseTopic/correlationData.
 */
import { EventEmitter } from 'node:events';
import mqtt, {
  Store,
  type IClientOptions,
  type IClientPublishOptions,
  type IConnackPacket,
  type IPublishPacket,
  type MqttClient,
} from 'mqtt';
import type { Logger } from 'pino';
import type { Outbox, OutboxEntry, Qos } from './outbox.js';
import type { Result, ResponsePayload, StatusPayload } from './payload.js';
import { topicsFor, type Topics } from './topics.js';
import { LogThrottle } from '../util/index.js';
import { tlsFailure } from './tls.js';
import { maskUrlCredentials } from '../config/index.js';

/** A clash of client ids shows as connections the broker closes within moments, again and again. */
const SHORT_LIVED_MS = 5_000;
const CLASH_THRESHOLD = 3;
/** Each reconnection delay is drawn from ±this fraction around its step. */
const RECONNECT_JITTER = 0.2;

export interface MqttPublisherOptions {
  url: string;
  clientId: string;
  protocolVersion?: 4 | 5;
  username?: string;
  /** The secret itself (the caller reads the password file). */
  password?: string | Buffer;
  /** PEM contents, not paths. */
  ca?: string | Buffer;
  /** The CA's file, for messages. */
  caFile?: string;
  cert?: string | Buffer;
  key?: string | Buffer;
  rejectUnauthorized?: boolean;
  keepaliveSec?: number;
  /** QoS of Results and responses. Default 1. */
  qos?: Qos;
  baseTopic: string;
  outbox: Outbox;
  /** The daemon's current status; published retained on every (re)connect. */
  statusPayload: () => StatusPayload | Record<string, unknown>;
  /** Results handed to mqtt.js and not yet acknowledged. Default 32. */
  inflightWindow?: number;
  /** A connection attempt (TCP, TLS, CONNECT until CONNACK) that takes longer is abandoned. Default 30 s. */
  connectTimeoutMs?: number;
  /** First delay before reconnecting; it doubles after every failed attempt up to reconnectMaxMs (±20 % jitter). Default 1 s. */
  reconnectMinMs?: number;
  /** Longest delay between reconnection attempts. Default 60 s. */
  reconnectMaxMs?: number;
  /**
   * A connection that lasted this long resets the delay to reconnectMinMs; a shorter one (a broker that
   * accepts and then drops us) keeps backing off. Default 10 s; 0 = every CONNACK resets it.
   */
  reconnectResetMs?: number;
  /** @deprecated A fixed delay (still jittered): reconnectMinMs and reconnectMaxMs default to it. */
  reconnectPeriodMs?: number;
  /** A request handler that takes longer gets an error response. Default 30 s. */
  requestTimeoutMs?: number;
  /**
   * MQTT 5: the broker keeps the session (subscriptions, QoS 1 requests sent meanwhile) this long after
   * a disconnect. 0 (default) = a clean session on every connect. Ignored by MQTT 3.1.1.
   */
  sessionExpirySec?: number;
  /** MQTT 5: message expiry of Results, counted from when they entered the outbox. 0 (default) = none. */
  resultExpirySec?: number;
  /** MQTT 5: user properties sent with every Result (e.g. model, provider). */
  resultUserProperties?: Record<string, string>;
}

export interface PublisherStats {
  connected: boolean;
  outboxDepth: number;
  outboxBytes: number;
  /** Results dropped by the outbox bounds. */
  dropped: number;
  /** publishNow messages (metrics, snapshots, responses) dropped because the broker was unreachable. */
  liveDropped: number;
  /** Messages other than Results (status, metrics, snapshots, responses, discovery) handed to the connection without an error. */
  livePublished: number;
  /** Errors of the connection: a broker unreachable, a TLS handshake or a CONNACK refused, a protocol error (one per failed attempt). */
  connectionErrors: number;
  /** Results the broker refused (e.g. a PUBACK reason code): dropped, since a retry cannot succeed. */
  failed: number;
  /** Results older than resultExpirySec when their turn came (MQTT 5): dropped unsent, the broker would discard them. */
  expired: number;
  /** Results acknowledged by the broker. */
  published: number;
  /** Successful connections after the first one. */
  reconnects: number;
  inflight: number;
  /** How long the oldest in-flight Result has waited for its acknowledgement (0 when none). */
  oldestInflightMs: number;
}

/** MQTT 5 publish properties (contentType, userProperties, correlationData, …). */
export type PublishProperties = NonNullable<IClientPublishOptions['properties']>;
/** Properties of a received message; undefined under MQTT 3.1.1. */
export type MessageProperties = IPublishPacket['properties'];

/** `request` says which op and topic the body came on; handlers registered for one op may ignore it. */
export type RequestHandler = (body: Record<string, unknown>, request: { op: string; topic: string }) => unknown;
export type MessageHandler = (topic: string, payload: Buffer, properties: MessageProperties) => void;

const JSON_CONTENT_TYPE = 'application/json';

const ERROR_LOG_INTERVAL_MS = 60_000;

/**
 * Delays between reconnection attempts: a step that doubles from `minMs` after every failed attempt up
 * to `maxMs`, each delay drawn uniformly from ±20 % around its step and kept within [minMs, maxMs]
 * (so even at the cap the delays differ between devices). When minMs = maxMs the delay is ±20 % of it.
 */
export class ReconnectBackoff {
  private failures = 0;
  readonly minMs: number;
  readonly maxMs: number;

  constructor(
    minMs: number,
    maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.minMs = Math.max(10, minMs);
    this.maxMs = Math.max(this.minMs, maxMs);
  }

  /** The delay before the next attempt; each call counts one more failed attempt. */
  next(): number {
    const step = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.failures, 40));
    this.failures++;
    let lo = step * (1 - RECONNECT_JITTER);
    let hi = step * (1 + RECONNECT_JITTER);
    if (this.maxMs > this.minMs) {
      lo = Math.max(lo, this.minMs);
      hi = Math.min(hi, this.maxMs);
    }
    return lo + this.random() * (hi - lo);
  }

  /** After a connection that lasted: the next delay is about minMs again. */
  reset(): void {
    this.failures = 0;
  }
}

/** mqtt.js's in-memory store, minus the replay on reconnect (the outbox re-sends instead). */
class ConnectionScopedStore extends Store {
  private readonly ids = new Set<number>();
  private closed = false;
  override put(packet: Parameters<Store['put']>[0], cb: Parameters<Store['put']>[1]): this {
    if (packet.messageId !== undefined) this.ids.add(packet.messageId);
    return super.put(packet, cb);
  }
  override del(packet: Parameters<Store['del']>[0], cb: Parameters<Store['del']>[1]): this {
    if (packet.messageId !== undefined) this.ids.delete(packet.messageId);
    if (this.closed) {
      cb?.(new Error('store closed')); // end() closed it; removeOutgoingMessage may still come after
      return this;
    }
    return super.del(packet, cb);
  }
  override createStream(): ReturnType<Store['createStream']> {
    return new Store().createStream();
  }
  override close(cb: Parameters<Store['close']>[0]): void {
    this.closed = true;
    super.close(cb);
  }
  /** Packet ids of the current connection's unacknowledged QoS>0 packets. */
  messageIds(): number[] {
    return [...this.ids];
  }
  /** Forget the packets of a closed connection. */
  clear(): void {
    for (const messageId of this.ids) {
      try {
        super.del({ messageId }, () => undefined);
      } catch {
        // store already closed by end()
      }
    }
    this.ids.clear();
  }
}

export class MqttPublisher {
  readonly topics: Topics;
  private client: MqttClient | null = null;
  private readonly store = new ConnectionScopedStore();
  /** Passed again to every reconnect(), which would otherwise replace the stores with fresh ones. */
  private readonly incomingStore = new Store();
  private readonly backoff: ReconnectBackoff;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly outbox: Outbox;
  private readonly qos: Qos;
  private readonly window: number;
  private readonly handlers = new Map<string, RequestHandler>();
  private readonly subscriptions: Array<{ filter: string; handler: MessageHandler }> = [];
  private readonly v5: boolean;
  private resultUserProperties: Record<string, string>;
  /** When each in-flight Result was sent: a broker that stops acknowledging shows in the oldest. */
  private readonly sentAt = new Map<number, number>();
  private readonly changes = new EventEmitter();
  /** Bumped on every connection loss; callbacks of an older connection no longer steer the drain. */
  private generation = 0;
  private sentThrough = 0;
  private readonly inflight = new Set<number>();
  private draining = false;
  private drainAgain = false;
  private statusPatch: Record<string, unknown> = {};
  private lastStatusJson: string | null = null;
  private everConnected = false;
  private isConnected = false;
  private connectedAt = 0;
  /** Connections in a row that the broker closed within SHORT_LIVED_MS: the signature of a client-id clash. */
  private shortLivedConnections = 0;
  /** The request subscription of the current connection was answered (SUBACK or error). */
  private subscribeSettled = false;
  private outageStart: number | null = null;
  private errorsInOutage = 0;
  /** The first error of an outage, then at most one a minute: mqtt.js emits one per retry. */
  private readonly errorLog = new LogThrottle(ERROR_LOG_INTERVAL_MS);
  private stopping: Promise<void> | null = null;
  private stopped = false;
  private counters = { liveDropped: 0, livePublished: 0, connectionErrors: 0, failed: 0, expired: 0, published: 0, reconnects: 0 };

  constructor(
    private readonly options: MqttPublisherOptions,
    private readonly logger: Logger,
  ) {
    this.topics = topicsFor(options.baseTopic);
    this.outbox = options.outbox;
    this.qos = options.qos ?? 1;
    this.window = Math.max(1, options.inflightWindow ?? 32);
    this.v5 = options.protocolVersion === 5;
    this.resultUserProperties = { ...options.resultUserProperties };
    this.changes.setMaxListeners(0);
    this.backoff = new ReconnectBackoff(
      options.reconnectMinMs ?? options.reconnectPeriodMs ?? 1_000,
      options.reconnectMaxMs ?? options.reconnectPeriodMs ?? 60_000,
    );
  }

  /** Starts connecting and returns at once: the daemon runs (and queues Results) while the broker is away. */
  async start(): Promise<void> {
    if (this.client) return;
    const o = this.options;
    // Only an MQTT 5 session can be bounded; a 3.1.1 persistent session would live forever on the broker.
    const sessionExpirySec = this.v5 ? Math.max(0, o.sessionExpirySec ?? 0) : 0;
    const clientOptions: IClientOptions = {
      clientId: o.clientId,
      protocolVersion: o.protocolVersion ?? 4,
      username: o.username,
      password: o.password === undefined ? undefined : Buffer.isBuffer(o.password) ? o.password : Buffer.from(o.password),
      ca: o.ca,
      cert: o.cert,
      key: o.key,
      rejectUnauthorized: o.rejectUnauthorized ?? true,
      keepalive: o.keepaliveSec ?? 30,
      connectTimeout: o.connectTimeoutMs ?? 30_000,
      // 0: mqtt.js does not reconnect by itself; scheduleReconnect() does, with backoff and jitter. A refused
      // CONNACK (e.g. credentials being rotated) closes the connection too, so it is retried the same way.
      reconnectPeriod: 0,
      // Results are never kept by the broker or by mqtt.js between connections: the outbox is their
      // store (ConnectionScopedStore). A kept session only holds our subscriptions and the requests sent
      // to us meanwhile. (QoS 2 caveat: a PUBREL lost with the connection is not re-sent; the Result goes
      // again as a new PUBLISH, whose random packet id could, rarely, match one the kept session still holds.)
      clean: sessionExpirySec === 0,
      properties: sessionExpirySec > 0 ? { sessionExpiryInterval: sessionExpirySec } : undefined,
      queueQoSZero: false,
      resubscribe: false,
      outgoingStore: this.store,
      incomingStore: this.incomingStore,
      will: {
        topic: this.topics.status,
        payload: Buffer.from(JSON.stringify(this.willPayload())),
        qos: 1,
        retain: true,
        properties: this.v5 ? { contentType: JSON_CONTENT_TYPE } : undefined,
      },
    };
    const client = mqtt.connect(o.url, clientOptions);
    this.client = client;
    client.on('connect', (connack) => this.onConnect(connack));
    client.on('close', () => this.onClose());
    client.on('disconnect', (packet) => {
      // MQTT 5 brokers may say why they hung up (0x8E: session taken over by the same client id).
      const reasonCode = packet.reasonCode ?? 0;
      this.logger.warn(
        { reasonCode, clientId: this.options.clientId },
        `mqtt: the broker disconnected us (reason 0x${reasonCode.toString(16)})`,
      );
    });
    client.on('error', (err) => this.onError(err));
    client.on('message', (topic, payload, packet) => void this.onMessage(topic, payload, packet));
  }

  /** Appends to the outbox and sends when connected. The only way Results are sent. */
  async enqueue(topic: string, payload: string | Buffer): Promise<number> {
    const id = await this.outbox.append({ topic, payload, qos: this.qos, retain: false });
    this.drain();
    return id;
  }

  /** `enqueue` for a Result, on `<base>/<source>/labels`. */
  enqueueResult(result: Result): Promise<number> {
    return this.enqueue(this.topics.labels(result.source), JSON.stringify(result));
  }

  /**
   * Non-durable publish (metrics, snapshots, responses): dropped and counted when not connected.
   * `properties` are MQTT 5 only (mqtt.js leaves them out under 3.1.1).
   */
  publishNow(topic: string, payload: string | Buffer, opts: { qos?: Qos; retain?: boolean; properties?: PublishProperties } = {}): boolean {
    const client = this.client;
    if (!client?.connected || this.stopped) {
      this.counters.liveDropped++;
      return false;
    }
    const publishOptions: IClientPublishOptions = { qos: opts.qos ?? 0, retain: opts.retain ?? false };
    if (this.v5 && opts.properties) publishOptions.properties = opts.properties;
    client.publish(topic, payload, publishOptions, (err) => {
      if (err) {
        this.counters.liveDropped++;
        this.logger.debug({ err, topic }, 'mqtt: live message not delivered');
      } else {
        this.counters.livePublished++;
      }
    });
    return true;
  }

  /**
   * Replaces the status (over `statusPayload()`) and republishes it, retained, when it changed. Replaced,
   * not merged: a merge kept an `error` field after the daemon was online again.
   */
  setStatus(status: Partial<StatusPayload> | Record<string, unknown>): void {
    this.statusPatch = { ...status };
    if (this.client) this.client.options.will!.payload = Buffer.from(JSON.stringify(this.willPayload()));
    this.publishStatus(false);
  }

  /**
   * Calls `handler` for every message on `filter` (MQTT wildcards allowed), subscribing on each
   * (re)connection. For features; request topics go through onRequest. The third argument holds the
   * message's MQTT 5 properties (undefined under 3.1.1).
   */
  subscribe(filter: string, handler: MessageHandler): void {
    this.subscriptions.push({ filter, handler });
    const client = this.client;
    if (client?.connected)
      client.subscribe(filter, { qos: 1 }, (err) => err && this.logger.warn({ err, filter }, 'mqtt: subscribe failed'));
  }

  /** Told on every connect (true) and connection loss (false). */
  onConnectionChange(listener: (connected: boolean) => void): void {
    this.changes.on('connection', listener);
  }

  onRequest(op: string, handler: RequestHandler): void {
    this.topics.request(op); // validates the op
    this.handlers.set(op, handler);
  }

  /** Unregisters the handler of `op` (a feature being reloaded); true if there was one. */
  removeRequest(op: string): boolean {
    return this.handlers.delete(op);
  }

  /** Replaces the MQTT 5 user properties of the Results sent from now on (outbox entries included). */
  setResultUserProperties(props: Record<string, string>): void {
    this.resultUserProperties = { ...props };
  }

  stats(): PublisherStats {
    return {
      connected: this.client?.connected ?? false,
      outboxDepth: this.outbox.depth,
      outboxBytes: this.outbox.bytes,
      dropped: this.outbox.dropped,
      ...this.counters,
      inflight: this.inflight.size,
      oldestInflightMs: this.oldestInflightMs(),
    };
  }

  /** Age of the oldest Result sent and not yet acknowledged on this connection (0 when none). */
  private oldestInflightMs(): number {
    let oldest = Infinity;
    for (const id of this.inflight) oldest = Math.min(oldest, this.sentAt.get(id) ?? Infinity);
    return oldest === Infinity ? 0 : Date.now() - oldest;
  }

  /** Resolves once connected and subscribed to requests; rejects after the timeout. */
  async waitUntilConnected(timeoutMs: number): Promise<void> {
    const ok = await this.waitUntil(() => this.client?.connected === true && this.subscribeSettled, Date.now() + timeoutMs);
    if (!ok) throw new Error(`not connected to ${this.options.url} after ${timeoutMs} ms`);
  }

  /**
   * Clean stop within `timeoutMs`: send what can be sent, publish the retained `stopped` status (the
   * will says `offline`: a crash or a lost link), disconnect. mqtt.js's end(false) never returns while offline with in-flight QoS 1, so it is
   * bounded and followed by end(true). The outbox keeps whatever was not acknowledged; the caller
   * closes it.
   */
  stop(timeoutMs: number): Promise<void> {
    this.stopping ??= this.stopWithin(timeoutMs);
    return this.stopping;
  }

  private async stopWithin(timeoutMs: number): Promise<void> {
    const client = this.client;
    if (!client) return;
    const deadline = Date.now() + timeoutMs;
    const endReserve = Math.min(1_000, timeoutMs / 4);
    await this.waitUntil(() => !client.connected || this.outbox.depth === 0, deadline - endReserve * 2);
    if (client.connected) {
      const stopped = JSON.stringify({ ...this.currentStatus(), state: 'stopped', since: new Date().toISOString() });
      const sent = new Promise<void>((resolve) => client.publish(this.topics.status, stopped, this.statusOptions(), () => resolve()));
      await raceDeadline(sent, deadline - endReserve);
    }
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    // Offline, there is no DISCONNECT to send: end(true) also abandons a connection attempt in progress,
    // which end(false) would leave to complete (and stay open) after the stop.
    const ended = await raceDeadline(client.endAsync(!client.connected), deadline);
    if (!ended) {
      this.logger.warn(
        { outboxDepth: this.outbox.depth },
        'mqtt: disconnect timed out, closing the connection; the outbox keeps unsent Results',
      );
      // end(true)'s callback is not always called when the stream is already gone (mqtt.js#710).
      await raceDeadline(client.endAsync(true), Date.now() + 200);
    }
    this.resetInflight();
    this.logger.info({ outboxDepth: this.outbox.depth, published: this.counters.published }, 'mqtt: stopped');
  }

  private onConnect(connack: IConnackPacket): void {
    const client = this.client!;
    if (this.stopped) return;
    if (this.everConnected) this.counters.reconnects++;
    // A resumed session means requests sent while we were away are being delivered now.
    const session = client.options.clean ? {} : { sessionPresent: connack.sessionPresent };
    if (this.outageStart !== null) {
      this.logger.info(
        {
          url: this.options.url,
          outageMs: Date.now() - this.outageStart,
          errors: this.errorsInOutage,
          outboxDepth: this.outbox.depth,
          ...session,
        },
        'mqtt: connected',
      );
    } else {
      this.logger.info({ url: this.options.url, outboxDepth: this.outbox.depth, ...session }, 'mqtt: connected');
    }
    this.everConnected = true;
    this.isConnected = true;
    this.connectedAt = Date.now();
    this.outageStart = null;
    this.errorsInOutage = 0;
    this.lastStatusJson = null;
    this.publishStatus(true);
    const generation = this.generation;
    client.subscribe(this.topics.requestWildcard, { qos: 1 }, (err) => {
      if (err && client.connected) this.logger.error({ err, topic: this.topics.requestWildcard }, 'mqtt: could not subscribe to requests');
      if (generation === this.generation) this.subscribeSettled = true;
      this.changes.emit('change');
    });
    for (const { filter } of this.subscriptions) {
      client.subscribe(filter, { qos: 1 }, (err) => err && client.connected && this.logger.warn({ err, filter }, 'mqtt: subscribe failed'));
    }
    this.drain();
    this.changes.emit('change');
    this.changes.emit('connection', true);
  }

  private onClose(): void {
    const wasConnected = this.isConnected;
    this.isConnected = false;
    this.subscribeSettled = false;
    if (wasConnected && !this.stopped) {
      this.shortLivedConnections = Date.now() - this.connectedAt < SHORT_LIVED_MS ? this.shortLivedConnections + 1 : 0;
      if (this.shortLivedConnections === CLASH_THRESHOLD) {
        this.logger.error(
          { clientId: this.options.clientId, connections: this.shortLivedConnections },
          'mqtt: the broker keeps closing the connection right after it opens: is another client using the same ' +
            'client id? Give each device its own deviceId or mqtt.clientId (also check the broker ACL)',
        );
      }
      this.outageStart = Date.now();
      this.errorsInOutage = 0;
      this.logger.warn({ url: this.options.url, outboxDepth: this.outbox.depth }, 'mqtt: connection lost; Results are kept in the outbox');
      if (Date.now() - this.connectedAt >= (this.options.reconnectResetMs ?? 10_000)) this.backoff.reset();
    }
    this.resetInflight();
    this.scheduleReconnect();
    this.changes.emit('change');
    if (wasConnected) this.changes.emit('connection', false);
  }

  /** One pending attempt at a time; mqtt.js emits one 'close' per connection (attempt), so one per failure. */
  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== undefined || !this.client) return;
    const delayMs = Math.round(this.backoff.next());
    this.logger.debug({ url: this.options.url, delayMs }, `mqtt: next connection attempt in ${delayMs} ms`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      const client = this.client;
      if (this.stopped || !client || client.connected) return;
      // Without the stores, reconnect() would put fresh ones in place: one that replays old packets.
      client.reconnect({ outgoingStore: this.store, incomingStore: this.incomingStore });
    }, delayMs);
  }

  /** Forget the closed connection's in-flight packets; the drain re-sends them from the outbox. */
  private resetInflight(): void {
    this.generation++;
    this.inflight.clear();
    this.sentAt.clear();
    this.sentThrough = this.outbox.ackedThrough;
    this.lastStatusJson = null;
    // Public API only (no pinned mqtt.js version, no private fields): removeOutgoingMessage() drops mqtt.js's
    // record of a packet, releases its id and calls its callback with an error; the ids are those our own
    // store saw. Stale records would otherwise pile up, never called back, over months of reconnects.
    const client = this.client;
    if (client) for (const messageId of this.store.messageIds()) client.removeOutgoingMessage(messageId);
    this.store.clear();
  }

  private onError(err: Error): void {
    this.outageStart ??= Date.now();
    this.errorsInOutage++;
    this.counters.connectionErrors++;
    if (this.errorsInOutage === 1) this.errorLog.reset('outage');
    if (this.errorLog.shouldLog('outage')) {
      // A broker reached but refused in the TLS handshake is not "unreachable": say what failed.
      const tls = tlsFailure(err as NodeJS.ErrnoException, {
        ca: this.options.caFile ?? (this.options.ca ? 'given' : ''),
        clientCert: !!this.options.cert,
      });
      this.logger.warn(
        {
          err: { message: err.message, code: (err as NodeJS.ErrnoException).code },
          url: this.options.url,
          errors: this.errorsInOutage,
          outboxDepth: this.outbox.depth,
        },
        tls ? `mqtt: ${tls}; retrying` : 'mqtt: cannot reach the broker; retrying',
      );
    }
  }

  private drain(): void {
    if (this.draining) {
      this.drainAgain = true; // a QoS 0 callback may fire synchronously inside publish()
      return;
    }
    this.draining = true;
    try {
      do {
        this.drainAgain = false;
        const client = this.client;
        if (!client?.connected || this.stopped) return;
        const window = this.effectiveWindow(client);
        const expiredBefore = this.counters.expired;
        while (this.inflight.size < window && client.connected) {
          const batch = this.outbox.nextBatch(this.sentThrough, window - this.inflight.size);
          if (batch.length === 0) break;
          for (const entry of batch) this.send(client, entry);
        }
        if (this.counters.expired !== expiredBefore) this.changes.emit('change'); // stop() waits for an empty outbox
      } while (this.drainAgain);
    } finally {
      this.draining = false;
    }
  }

  /** A v5 broker announces how many QoS>0 messages it accepts in flight; leave room for status and responses. */
  private effectiveWindow(client: MqttClient): number {
    const receiveMaximum = client.serverProperties?.receiveMaximum;
    return receiveMaximum ? Math.max(1, Math.min(this.window, receiveMaximum - 4)) : this.window;
  }

  private send(client: MqttClient, entry: OutboxEntry): void {
    const generation = this.generation;
    this.sentThrough = entry.id;
    const options: IClientPublishOptions = { qos: entry.qos, retain: entry.retain ?? false };
    if (this.v5) {
      const properties = this.resultProperties(entry);
      if (properties === null) {
        this.counters.expired++;
        this.outbox.ack(entry.id);
        return;
      }
      options.properties = properties;
    }
    this.inflight.add(entry.id);
    this.sentAt.set(entry.id, Date.now());
    client.publish(entry.topic, entry.payload, options, (err) => this.onSent(generation, entry, err));
  }

  /**
   * MQTT 5 properties of a Result, or null when it expired. The expiry counts from the outbox append
   * (the moment the Result was produced), not from this send, which may come after an outage or a
   * restart: the broker is told only what is left of it.
   */
  private resultProperties(entry: OutboxEntry): PublishProperties | null {
    const properties: PublishProperties = { contentType: JSON_CONTENT_TYPE };
    const expirySec = this.options.resultExpirySec ?? 0;
    if (expirySec > 0) {
      // A clock set back (NTP after boot) gives a negative age: never announce more than the full expiry.
      const ageSec = Math.max(0, (Date.now() - entry.ts) / 1000);
      const leftSec = expirySec - ageSec;
      if (leftSec <= 0) return null;
      properties.messageExpiryInterval = Math.max(1, Math.ceil(leftSec));
    }
    if (Object.keys(this.resultUserProperties).length > 0) properties.userProperties = { ...this.resultUserProperties };
    return properties;
  }

  private statusOptions(): IClientPublishOptions {
    return { qos: 1, retain: true, properties: this.v5 ? { contentType: JSON_CONTENT_TYPE } : undefined };
  }

  private onSent(generation: number, entry: OutboxEntry, err: Error | undefined): void {
    if (!err) {
      this.outbox.ack(entry.id); // a PUBACK is a PUBACK, even from a connection already replaced
      this.counters.published++;
    }
    if (generation !== this.generation) return;
    this.inflight.delete(entry.id);
    this.sentAt.delete(entry.id);
    if (err && err.message !== 'Connection closed' && this.client?.connected) {
      // Refused by the broker or by mqtt.js for this message (reason code, size, …): re-sending
      // cannot help and would stall every Result behind it.
      this.counters.failed++;
      this.outbox.ack(entry.id);
      this.logger.error(
        { err: { message: err.message, code: (err as { code?: unknown }).code }, topic: entry.topic, id: entry.id },
        'mqtt: broker refused a Result; dropped',
      );
    }
    this.changes.emit('change');
    this.drain();
  }

  private currentStatus(): Record<string, unknown> {
    let base: Record<string, unknown> = {};
    try {
      base = { ...this.options.statusPayload() };
    } catch (err) {
      this.logger.error({ err }, 'mqtt: statusPayload() threw');
    }
    return { ...base, ...this.statusPatch };
  }

  private willPayload(): Record<string, unknown> {
    const { version, model, provider } = this.currentStatus();
    return { state: 'offline', version, model, provider, error: 'connection lost' };
  }

  private publishStatus(force: boolean): void {
    const client = this.client;
    if (!client?.connected || this.stopped) return;
    const json = JSON.stringify(this.currentStatus());
    if (!force && json === this.lastStatusJson) return;
    this.lastStatusJson = json;
    client.publish(this.topics.status, json, this.statusOptions(), (err) => {
      if (!err) this.counters.livePublished++;
      else if (client.connected) this.logger.warn({ err }, 'mqtt: status not published');
    });
  }

  private async onMessage(topic: string, payload: Buffer, packet: IPublishPacket): Promise<void> {
    const properties = packet.properties;
    for (const s of this.subscriptions) {
      if (!topicMatches(s.filter, topic)) continue;
      try {
        s.handler(topic, payload, properties);
      } catch (err) {
        // One feature's bug must not keep the message from the others, nor from the request handling below.
        this.logger.error({ err, topic, filter: s.filter }, 'mqtt: a subscription handler threw');
      }
    }
    const op = this.topics.requestOp(topic);
    if (op === null) return;
    let transaction: string | number | undefined;
    let response: ResponsePayload;
    try {
      const body = parseRequestBody(payload);
      if (typeof body === 'string') {
        response = { status: 'error', error: body };
      } else {
        if (typeof body.transaction === 'string' || typeof body.transaction === 'number') transaction = body.transaction;
        const handler = this.handlers.get(op);
        if (!handler) {
          const known = [...this.handlers.keys()].sort().join(', ') || 'none';
          response = { status: 'error', error: `unknown request "${op}" (known: ${known})` };
        } else {
          const data = await withTimeout(
            Promise.resolve().then(() => handler(body, { op, topic })),
            this.options.requestTimeoutMs ?? 30_000,
          );
          response = data === undefined ? { status: 'ok' } : { status: 'ok', data };
        }
      }
    } catch (err) {
      // Handlers may throw anything (a string, undefined): the requester still gets an answer.
      // A handler's error may quote a URL (a camera's): the response is published, so it is masked.
      response = { status: 'error', error: maskUrlCredentials(err instanceof Error ? err.message : String(err)) };
    }
    if (transaction !== undefined) response.transaction = transaction;
    let json: string;
    try {
      json = JSON.stringify(response);
    } catch (err) {
      json = JSON.stringify({ status: 'error', error: `response could not be serialised: ${(err as Error).message}`, transaction });
    }
    // MQTT 5 request/response: the requester names its reply topic and how it matches replies.
    const responseProperties: PublishProperties = { contentType: JSON_CONTENT_TYPE };
    if (properties?.correlationData !== undefined) responseProperties.correlationData = properties.correlationData;
    let responseTopic = this.topics.response(op);
    if (properties?.responseTopic !== undefined) {
      const problem = responseTopicProblem(properties.responseTopic);
      if (problem === null) {
        responseTopic = properties.responseTopic;
      } else {
        const fields = { op, responseTopic: properties.responseTopic, problem };
        this.logger.debug(fields, 'mqtt: unusable response topic, answering on the default one');
      }
    }
    this.publishNow(responseTopic, json, { qos: this.qos, retain: false, properties: responseProperties });
  }

  /** Resolves true when `cond` holds, false at the deadline; re-checked on every connection or ack change. */
  private waitUntil(cond: () => boolean, deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const finish = (value: boolean) => {
        clearTimeout(timer);
        this.changes.off('change', check);
        resolve(value);
      };
      const check = () => {
        if (cond()) finish(true);
      };
      const timer = setTimeout(() => finish(cond()), Math.max(0, deadline - Date.now()));
      this.changes.on('change', check);
      check();
    });
  }
}

/** Why a request's MQTT 5 response topic cannot be published to, or null. */
function responseTopicProblem(topic: string): string | null {
  if (topic.length === 0) return 'empty';
  if (topic.includes('+') || topic.includes('#')) return 'contains a wildcard';
  if (topic.includes('\u0000')) return 'contains a NUL character';
  if (Buffer.byteLength(topic, 'utf8') > 65_535) return 'longer than 65535 bytes';
  return null;
}

/** The request body as an object, or an error message for the response. Empty payload = `{}`. */
function parseRequestBody(payload: Buffer): Record<string, unknown> | string {
  const text = payload.toString('utf8').trim();
  if (text === '') return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    return `invalid JSON: ${(err as Error).message}`;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'request body must be a JSON object';
  return body as Record<string, unknown>;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`request timed out after ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** true if the promise settled before the deadline. */
async function raceDeadline(promise: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** MQTT topic filter matching: `+` one level, `#` the rest. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}
