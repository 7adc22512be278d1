import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Config, loadConfig } from '../../src/config/index.js';
import { DaemonEventBus } from '../../src/features/events.js';
import {
  DISCOVERY_STATE_FILE,
  type DiscoveryMessage,
  type DiscoveryOptions,
  discoveryMessages,
  homeAssistantFeature,
  TEMPLATES,
} from '../../src/features/homeassistant.js';
import type { Feature, FeatureContext } from '../../src/features/types.js';
import type { Metrics } from '../../src/ops/index.js';
import { MqttPublisher } from '../../src/publish/mqtt.js';
import { Outbox } from '../../src/publish/outbox.js';
import { type CollectedMessage, type Collector, collect, startBroker, type TestBroker } from '../helpers/broker.js';

const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<unknown> | unknown> = [];
let broker: TestBroker;

beforeAll(async () => {
  broker = await startBroker();
});
afterAll(async () => {
  await broker?.stop();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const ENTITIES_PER_SOURCE = 5;

function options(deviceId: string, sources: string[]): DiscoveryOptions {
  return {
    deviceId,
    baseTopic: `inceptiond/${deviceId}`,
    discoveryPrefix: 'homeassistant',
    sources,
    version: '1.2.3',
  };
}

/** What Home Assistant needs of each component to create the entity and tie it to the device. */
function expectValidDiscovery(topic: string, payload: Record<string, unknown>): void {
  const [, component] = topic.split('/');
  expect(topic).toMatch(/^homeassistant\/(sensor|image|switch|button)\/inceptiond_[A-Za-z0-9_-]+\/[A-Za-z0-9_-]+\/config$/);
  expect(payload.unique_id).toEqual(expect.any(String));
  expect(payload.default_entity_id).toBe(`${component}.${payload.unique_id}`);
  expect(payload.name).toEqual(expect.any(String));
  const device = payload.device as { identifiers?: unknown; name?: unknown };
  expect(device.identifiers).toEqual([expect.stringMatching(/^inceptiond_/)]);
  expect(device.name).toEqual(expect.any(String));
  expect(payload.origin).toMatchObject({ name: 'inceptiond', sw_version: expect.any(String) });
  const required: Record<string, string[]> = {
    sensor: ['state_topic'],
    image: ['image_topic', 'content_type'],
    switch: ['command_topic', 'state_topic', 'payload_on', 'payload_off'],
    button: ['command_topic', 'payload_press'],
  };
  for (const key of required[component]!) expect(payload[key], `${topic} ${key}`).toEqual(expect.any(String));
  // The daemon state sensor alone has none: it must still show `offline`.
  if (topic.endsWith('/state/config')) {
    expect(payload.availability).toBeUndefined();
  } else {
    const availability = payload.availability as Array<{ topic: string; value_template: string }>;
    expect(availability).toHaveLength(2);
    expect(availability[0]!.topic).toMatch(/\/status$/);
    expect(availability[1]!.topic).toMatch(/\/[A-Za-z0-9_-]+\/status$/);
    expect(payload.availability_mode).toBe('all');
  }
}

describe('discovery payloads', () => {
  it('carry what Home Assistant requires, for every component', () => {
    const messages = discoveryMessages(options('kitchen', ['camera', 'door']));
    expect(messages).toHaveLength(1 + 2 * ENTITIES_PER_SOURCE);
    for (const m of messages) expectValidDiscovery(m.topic, m.payload);
    const byId = new Map(messages.map((m) => [m.payload.unique_id, m]));

    expect(byId.get('inceptiond_kitchen_camera_label')).toMatchObject({
      topic: 'homeassistant/sensor/inceptiond_kitchen/camera_label/config',
      payload: {
        state_topic: 'inceptiond/kitchen/camera/labels',
        json_attributes_topic: 'inceptiond/kitchen/camera/labels',
        device: { identifiers: ['inceptiond_kitchen'], name: 'inceptiond kitchen', manufacturer: 'inceptiond', sw_version: '1.2.3' },
        availability: [{ topic: 'inceptiond/kitchen/status' }, { topic: 'inceptiond/kitchen/camera/status' }],
      },
    });
    expect(byId.get('inceptiond_kitchen_camera_score')?.payload).toMatchObject({ unit_of_measurement: '%', state_class: 'measurement' });
    expect(byId.get('inceptiond_kitchen_camera_snapshot')).toMatchObject({
      component: 'image',
      payload: { image_topic: 'inceptiond/kitchen/camera/snapshot', content_type: 'image/jpeg' },
    });
    const pause = byId.get('inceptiond_kitchen_door_pause')!.payload;
    expect(pause).toMatchObject({
      command_topic: 'inceptiond/kitchen/request/pause',
      state_topic: 'inceptiond/kitchen/door/status',
      state_on: 'ON',
      state_off: 'OFF',
    });
    expect(JSON.parse(pause.payload_on as string)).toEqual({ source: 'door' });
    expect(JSON.parse(pause.payload_off as string)).toEqual({ source: 'door', paused: false });
    const capture = byId.get('inceptiond_kitchen_door_capture')!.payload;
    expect(capture.command_topic).toBe('inceptiond/kitchen/request/snapshot');
    expect(JSON.parse(capture.payload_press as string)).toEqual({ source: 'door' });
    expect(byId.get('inceptiond_kitchen_state')?.payload).toMatchObject({ state_topic: 'inceptiond/kitchen/status' });
  });

  it('never share a topic or unique_id between two daemons, nor between sources whose ids contain "_"', () => {
    const ids = (m: DiscoveryMessage[]) => [...m.map((x) => x.topic), ...m.map((x) => x.payload.unique_id as string)];
    const kitchen = ids(discoveryMessages(options('kitchen', ['camera', 'door'])));
    const garage = ids(discoveryMessages(options('garage', ['camera', 'door'])));
    const kitchen2 = ids(discoveryMessages(options('kitchen-2', ['camera', 'door'])));
    const all = [...kitchen, ...garage, ...kitchen2];
    expect(new Set(all).size).toBe(all.length);
    const identifiers = ['kitchen', 'garage'].map(
      (d) => (discoveryMessages(options(d, []))[0]!.payload.device as { identifiers: string[] }).identifiers[0],
    );
    expect(identifiers).toEqual(['inceptiond_kitchen', 'inceptiond_garage']);

    const tricky = ids(discoveryMessages(options('kitchen', ['front', 'front_door', 'front_door_label', 'state'])));
    expect(new Set(tricky).size).toBe(tricky.length);
  });

  it("templates read the fields of the Result and status payloads (HA's Jinja cannot run here)", () => {
    expect(TEMPLATES.topLabel).toContain('value_json.labels[0].label');
    expect(TEMPLATES.topLabel).toMatch(/if value_json\.labels else 'none'/);
    expect(TEMPLATES.topScore).toContain('value_json.labels[0].score * 100');
    expect(TEMPLATES.topScore).toMatch(/if value_json\.labels else 0/);
    for (const field of ['value_json.labels', 'value_json.seq', 'value_json.frame.capturedAt', 'value_json.model.name', 'tojson']) {
      expect(TEMPLATES.labelAttributes).toContain(field);
    }
    expect(TEMPLATES.paused).toBe("{{ 'ON' if value_json.paused else 'OFF' }}");
    expect(TEMPLATES.daemonState).toBe('{{ value_json.state }}');
    for (const state of ['online', 'degraded', 'starting']) expect(TEMPLATES.daemonAvailable).toContain(`'${state}'`);
    for (const state of ['online', 'degraded']) expect(TEMPLATES.sourceAvailable).toContain(`'${state}'`);
    expect(TEMPLATES.sourceAvailable).not.toContain('finished');
    // Balanced Jinja delimiters: a stray brace makes HA refuse the whole config.
    for (const t of Object.values(TEMPLATES)) {
      expect(t).toMatch(/^\{\{ .* \}\}$/s);
      expect(t.split('{{').length - 1, t).toBe(1);
      expect(t.split('}}').length - 1, t).toBe(1);
    }
  });
});

describe('homeAssistantFeature against a broker', () => {
  interface Daemon {
    deviceId: string;
    stateDir: string;
    config: Config;
    publisher: MqttPublisher;
    feature: Feature;
  }

  let counter = 0;
  /** A unique device per test: the broker's retained store is shared by the file's tests. */
  const freshDeviceId = () => `dev${process.pid}x${++counter}`;

  function makeConfig(deviceId: string, stateDir: string, sources: string[], enabled = true): Config {
    return loadConfig({
      env: {},
      checkFiles: false,
      overlay: {
        deviceId,
        stateDir,
        homeassistant: { enabled },
        sources: sources.map((id) => ({ id, backend: 'webcam' })),
      },
    }).config;
  }

  async function publisherFor(deviceId: string, stateDir: string, start = true): Promise<MqttPublisher> {
    const outbox = await Outbox.open(join(stateDir, 'outbox'), { maxMessages: 1000, maxBytes: 1_000_000, maxAgeSec: 0 }, logger);
    const publisher = new MqttPublisher(
      {
        url: broker.url,
        clientId: `ha-${deviceId}-${Math.random().toString(16).slice(2, 8)}`,
        protocolVersion: broker.kind === 'mosquitto' ? 5 : 4,
        baseTopic: `inceptiond/${deviceId}`,
        outbox,
        statusPayload: () => ({ state: 'online', version: '0.1.0' }),
        reconnectPeriodMs: 100,
        connectTimeoutMs: 2_000,
      },
      logger,
    );
    cleanups.push(async () => {
      await publisher.stop(2_000);
      await outbox.close();
    });
    if (start) {
      await publisher.start();
      await publisher.waitUntilConnected(10_000);
    }
    return publisher;
  }

  function contextFor(daemon: { config: Config; publisher: MqttPublisher }): FeatureContext {
    const paused = new Set<string>();
    return {
      config: () => daemon.config,
      logger,
      topics: daemon.publisher.topics,
      publisher: daemon.publisher,
      metrics: {} as Metrics,
      events: new DaemonEventBus(),
      status: {
        payload: () => ({ state: 'online' }),
        health: () => ({ healthy: true, status: 'ok', state: 'online', mqttConnected: true }),
      },
      sources: {
        ids: () => daemon.config.sources.map((s) => s.id),
        isPaused: (id) => paused.has(id),
        setPaused: (id, p) => {
          const ids = id === undefined ? daemon.config.sources.map((s) => s.id) : [id];
          for (const i of ids) p ? paused.add(i) : paused.delete(i);
          return ids;
        },
        latestFrame: () => undefined,
      },
      operations: {
        info: () => ({}),
        reload: async () => ({ applied: [], restartNeeded: [], sources: { added: [], removed: [], restarted: [] } }),
        set: async () => ({ applied: [], restartNeeded: [], sources: { added: [], removed: [], restarted: [] }, persisted: false }),
      },
    };
  }

  /** Starts a daemon's feature (a new run over the same state directory when `stateDir` is given). */
  async function runDaemon(opts: { deviceId?: string; stateDir?: string; sources: string[]; enabled?: boolean }): Promise<Daemon> {
    const deviceId = opts.deviceId ?? freshDeviceId();
    const stateDir = opts.stateDir ?? (await mkdtemp(join(tmpdir(), 'inceptiond-ha-')));
    const config = makeConfig(deviceId, stateDir, opts.sources, opts.enabled ?? true);
    const publisher = await publisherFor(deviceId, stateDir);
    const daemon: Daemon = { deviceId, stateDir, config, publisher, feature: homeAssistantFeature() };
    await daemon.feature.start(contextFor(daemon));
    cleanups.push(() => daemon.feature.stop());
    return daemon;
  }

  async function collector(filter: string): Promise<Collector> {
    const c = await collect(broker.url, filter);
    cleanups.push(() => c.close());
    return c;
  }

  async function publish(topic: string, payload: string): Promise<void> {
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
    await client.publishAsync(topic, payload, { qos: 1 });
    await client.endAsync();
  }

  /**
   * The retained discovery configs a fresh subscriber gets for one device. A sentinel published after
   * the subscription arrives after the broker's retained burst, so waiting for it proves absence.
   */
  async function retainedConfigs(deviceId: string): Promise<CollectedMessage[]> {
    const c = await collect(broker.url, `homeassistant/+/inceptiond_${deviceId}/#`);
    try {
      const sentinel = `homeassistant/sentinel/inceptiond_${deviceId}/x${Math.random().toString(16).slice(2)}`;
      await publish(sentinel, 'end');
      await c.waitFor((m) => m.topic === sentinel);
      return c.messages.filter((m) => m.retain && m.topic.endsWith('/config') && m.payload.length > 0);
    } finally {
      await c.close();
    }
  }

  const recordedTopics = (stateDir: string): string[] =>
    (JSON.parse(readFileSync(join(stateDir, DISCOVERY_STATE_FILE), 'utf8')) as { topics: string[] }).topics;

  it('publishes every config retained, records the topics, and HA gets valid payloads', async () => {
    const daemon = await runDaemon({ sources: ['camera', 'door'] });
    const expected = 1 + 2 * ENTITIES_PER_SOURCE;
    const retained = await retainedConfigs(daemon.deviceId);
    expect(retained).toHaveLength(expected);
    for (const m of retained) {
      expectValidDiscovery(m.topic, JSON.parse(m.text) as Record<string, unknown>);
      expect(m.qos).toBe(1);
    }
    expect(recordedTopics(daemon.stateDir).sort()).toEqual(retained.map((m) => m.topic).sort());
  });

  it('sends discovery again when Home Assistant announces itself online', async () => {
    const daemon = await runDaemon({ sources: ['camera'] });
    const perRound = 1 + ENTITIES_PER_SOURCE;
    const c = await collector(`homeassistant/+/inceptiond_${daemon.deviceId}/#`);
    await c.waitForCount(perRound); // the retained configs
    await publish('homeassistant/status', 'online');
    const received = await c.waitForCount(2 * perRound);
    const second = received.slice(perRound);
    expect(new Set(second.map((m) => m.topic))).toEqual(new Set(received.slice(0, perRound).map((m) => m.topic)));
    await publish('homeassistant/status', 'online');
    await c.waitForCount(3 * perRound);
  });

  it('sends discovery again on a reconnection', async () => {
    const daemon = await runDaemon({ sources: ['camera'] });
    const perRound = 1 + ENTITIES_PER_SOURCE;
    const c = await collector(`homeassistant/+/inceptiond_${daemon.deviceId}/#`);
    await c.waitForCount(perRound);
    // Restarting the broker (no persistence) drops every retained message: the reconnection restores them.
    await broker.restart();
    await daemon.publisher.waitUntilConnected(10_000);
    await expect.poll(async () => (await retainedConfigs(daemon.deviceId)).length, { timeout: 15_000 }).toBe(perRound);
  });

  it('clears the configs of a source removed by a reload', async () => {
    const daemon = await runDaemon({ sources: ['camera', 'door'] });
    const c = await collector(`homeassistant/+/inceptiond_${daemon.deviceId}/#`);
    await c.waitForCount(1 + 2 * ENTITIES_PER_SOURCE);

    daemon.config = makeConfig(daemon.deviceId, daemon.stateDir, ['camera']);
    await daemon.feature.reload!(daemon.config);
    const doorTopics = (await c.waitForCount(ENTITIES_PER_SOURCE, { filter: (m) => m.payload.length === 0 })).map((m) => m.topic);
    expect(doorTopics.every((t) => t.includes('/door_'))).toBe(true);

    const retained = await retainedConfigs(daemon.deviceId);
    expect(retained.map((m) => m.topic).filter((t) => t.includes('/door_'))).toEqual([]);
    expect(retained).toHaveLength(1 + ENTITIES_PER_SOURCE);
    expect(recordedTopics(daemon.stateDir).some((t) => t.includes('/door_'))).toBe(false);

    // And a source added by a reload is announced.
    daemon.config = makeConfig(daemon.deviceId, daemon.stateDir, ['camera', 'yard']);
    await daemon.feature.reload!(daemon.config);
    await c.waitFor((m) => m.topic === `homeassistant/image/inceptiond_${daemon.deviceId}/yard_snapshot/config` && m.payload.length > 0);
  });

  it('clears every config when a later run has discovery disabled', async () => {
    const first = await runDaemon({ sources: ['camera', 'door'] });
    expect(await retainedConfigs(first.deviceId)).toHaveLength(1 + 2 * ENTITIES_PER_SOURCE);
    await first.feature.stop();
    await first.publisher.stop(2_000);

    const c = await collector(`homeassistant/+/inceptiond_${first.deviceId}/#`);
    await c.waitForCount(1 + 2 * ENTITIES_PER_SOURCE);
    await runDaemon({ deviceId: first.deviceId, stateDir: first.stateDir, sources: ['camera', 'door'], enabled: false });
    await c.waitForCount(1 + 2 * ENTITIES_PER_SOURCE, { filter: (m) => m.payload.length === 0 });
    expect(await retainedConfigs(first.deviceId)).toEqual([]);
    await expect.poll(() => existsSync(join(first.stateDir, DISCOVERY_STATE_FILE))).toBe(false);
  });

  it('a cleanup started while the broker is unreachable waits for the connection', async () => {
    const first = await runDaemon({ sources: ['camera'] });
    expect(await retainedConfigs(first.deviceId)).toHaveLength(1 + ENTITIES_PER_SOURCE);
    await first.feature.stop();
    await first.publisher.stop(2_000);

    // Second run: discovery disabled, feature started before the publisher connects.
    const config = makeConfig(first.deviceId, first.stateDir, ['camera'], false);
    const publisher = await publisherFor(first.deviceId, first.stateDir, false);
    const feature = homeAssistantFeature();
    await feature.start(contextFor({ config, publisher }));
    cleanups.push(() => feature.stop());
    expect(await retainedConfigs(first.deviceId)).toHaveLength(1 + ENTITIES_PER_SOURCE);
    expect(recordedTopics(first.stateDir)).toHaveLength(1 + ENTITIES_PER_SOURCE);

    await publisher.start();
    await expect.poll(async () => (await retainedConfigs(first.deviceId)).length, { timeout: 15_000 }).toBe(0);
    await expect.poll(() => existsSync(join(first.stateDir, DISCOVERY_STATE_FILE))).toBe(false);
  });

  it('when disabled from the start it publishes, writes and subscribes nothing', async () => {
    const deviceId = freshDeviceId();
    const stateDir = await mkdtemp(join(tmpdir(), 'inceptiond-ha-'));
    const daemon = { config: makeConfig(deviceId, stateDir, ['camera'], false), publisher: await publisherFor(deviceId, stateDir) };
    const subscribe = vi.spyOn(daemon.publisher, 'subscribe');
    const publishNow = vi.spyOn(daemon.publisher, 'publishNow');
    const feature = homeAssistantFeature();
    await feature.start(contextFor(daemon));
    cleanups.push(() => feature.stop());
    await feature.reload!(daemon.config);
    expect(subscribe).not.toHaveBeenCalled();
    expect(publishNow).not.toHaveBeenCalled();
    expect(existsSync(join(stateDir, DISCOVERY_STATE_FILE))).toBe(false);
    expect(await retainedConfigs(deviceId)).toEqual([]);
  });
});
