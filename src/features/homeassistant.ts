/**
 * Home Assistant MQTT discovery: one HA device per daemon and, per source, the top label, its score,
 * the snapshot, a pause switch and a snapshot button (Zigbee2MQTT's homeassistant extension is the
 * model). Discovery configs are retained, sent on start, on every (re)connection and when Home
 * Assistant's birth message says `online`.
 *
 * Removal: retained configs outlive the daemon, so the topics sent are listed in
 * `<stateDir>/homeassistant.json`; on start and reload the listed topics no longer wanted (a source
 * removed, discovery turned off, another prefix) are cleared with an empty retained payload. The
 * feature therefore always runs: when disabled it only does that cleanup (no subscription).
 */
import { readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config/index.js';
import { packageVersion } from '../ops/index.js';
import { topicsFor } from '../publish/index.js';
import { writeFileAtomic } from '../util/index.js';
import type { Feature, FeatureContext } from './types.js';

/** The file, in the state directory, listing the discovery topics published (or still to clear). */
export const DISCOVERY_STATE_FILE = 'homeassistant.json';

export type DiscoveryComponent = 'sensor' | 'image' | 'switch' | 'button';

export interface DiscoveryMessage {
  /** `<prefix>/<component>/inceptiond_<deviceId>/<objectId>/config` */
  topic: string;
  component: DiscoveryComponent;
  /** `<source>_<entity>`, or `state` for the daemon's own sensor. */
  objectId: string;
  payload: Record<string, unknown>;
}

export interface DiscoveryOptions {
  deviceId: string;
  baseTopic: string;
  discoveryPrefix: string;
  /** Source ids, in configuration order. */
  sources: string[];
  /** The daemon's version (device and origin `sw_version`). */
  version: string;
  /** The model's manifest name, shown as the device's `model_id` when known. */
  modelName?: string;
  supportUrl?: string;
}

/**
 * Jinja templates Home Assistant renders. A Result's `labels` are highest first and may be empty (nothing
 * above the threshold): the sensors then say `none` and 0 rather than failing to render.
 */
export const TEMPLATES = {
  /** HA keeps at most 255 characters of a state. */
  topLabel: "{{ value_json.labels[0].label[:255] if value_json.labels else 'none' }}",
  topScore: '{{ (value_json.labels[0].score * 100) | round(1) if value_json.labels else 0 }}',
  labelAttributes:
    "{{ {'labels': value_json.labels, 'seq': value_json.seq, 'captured_at': value_json.frame.capturedAt, 'model': value_json.model.name} | tojson }}",
  paused: "{{ 'ON' if value_json.paused else 'OFF' }}",
  daemonState: '{{ value_json.state }}',
  /** `starting` counts as available: the retained status says so until the first Result. */
  daemonAvailable: "{{ 'online' if value_json.state in ['online', 'degraded', 'starting'] else 'offline' }}",
  /** A `finished` files source or an `offline` one has nothing more to show. */
  sourceAvailable: "{{ 'online' if value_json.state in ['online', 'degraded'] else 'offline' }}",
} as const;

/** `inceptiond_<deviceId>`: the HA device identifier and the discovery topics' node id. */
export function deviceKey(deviceId: string): string {
  return `inceptiond_${deviceId}`;
}

export function discoveryDevice(o: Pick<DiscoveryOptions, 'deviceId' | 'version' | 'modelName'>): Record<string, unknown> {
  return {
    identifiers: [deviceKey(o.deviceId)],
    name: `inceptiond ${o.deviceId}`,
    manufacturer: 'inceptiond',
    model: 'Inception V2 classifier',
    ...(o.modelName ? { model_id: o.modelName } : {}),
    sw_version: o.version,
  };
}

export function discoveryOrigin(o: Pick<DiscoveryOptions, 'version' | 'supportUrl'>): Record<string, unknown> {
  return { name: 'inceptiond', sw_version: o.version, ...(o.supportUrl ? { support_url: o.supportUrl } : {}) };
}

/**
 * Every discovery message for this daemon. Object ids are `<source>_<entity>` with entity keys that
 * contain no `_`, so two sources of one daemon never share an id even when their ids contain `_`; the
 * daemon's own sensor is `state`, which has no `_` and so matches no source entity.
 */
export function discoveryMessages(o: DiscoveryOptions): DiscoveryMessage[] {
  const topics = topicsFor(o.baseTopic);
  const node = deviceKey(o.deviceId);
  const device = discoveryDevice(o);
  const origin = discoveryOrigin(o);
  const daemonAvailability = { topic: topics.status, value_template: TEMPLATES.daemonAvailable };

  const message = (component: DiscoveryComponent, objectId: string, fields: Record<string, unknown>): DiscoveryMessage => {
    const id = `${node}_${objectId}`;
    return {
      topic: `${o.discoveryPrefix}/${component}/${node}/${objectId}/config`,
      component,
      objectId,
      payload: {
        ...fields,
        unique_id: id,
        // object_id for Home Assistant before 2025.10, default_entity_id after (it deprecated object_id).
        object_id: id,
        default_entity_id: `${component}.${id}`,
        device,
        origin,
      },
    };
  };

  const messages: DiscoveryMessage[] = [
    // Like Zigbee2MQTT's bridge state: no availability, or it would hide the `offline` it reports.
    message('sensor', 'state', {
      name: 'State',
      icon: 'mdi:state-machine',
      entity_category: 'diagnostic',
      state_topic: topics.status,
      value_template: TEMPLATES.daemonState,
      json_attributes_topic: topics.status,
    }),
  ];

  for (const source of o.sources) {
    const labels = topics.labels(source);
    const sourceStatus = topics.sourceStatus(source);
    const common = {
      availability: [daemonAvailability, { topic: sourceStatus, value_template: TEMPLATES.sourceAvailable }],
      availability_mode: 'all',
    };
    const request = (body: Record<string, unknown>) => JSON.stringify({ source, ...body });
    messages.push(
      message('sensor', `${source}_label`, {
        name: `${source} label`,
        icon: 'mdi:tag-text',
        state_topic: labels,
        value_template: TEMPLATES.topLabel,
        json_attributes_topic: labels,
        json_attributes_template: TEMPLATES.labelAttributes,
        ...common,
      }),
      message('sensor', `${source}_score`, {
        name: `${source} score`,
        icon: 'mdi:percent',
        state_topic: labels,
        value_template: TEMPLATES.topScore,
        unit_of_measurement: '%',
        state_class: 'measurement',
        suggested_display_precision: 1,
        ...common,
      }),
      message('image', `${source}_snapshot`, {
        name: `${source} snapshot`,
        image_topic: topics.snapshot(source),
        content_type: 'image/jpeg',
        ...common,
      }),
      message('switch', `${source}_pause`, {
        name: `${source} paused`,
        icon: 'mdi:pause-circle',
        command_topic: topics.request('pause'),
        // One command topic for both: the pause request resumes when `paused` is false.
        payload_on: request({}),
        payload_off: request({ paused: false }),
        state_topic: sourceStatus,
        value_template: TEMPLATES.paused,
        // Without these HA would compare the rendered ON/OFF with payload_on/payload_off.
        state_on: 'ON',
        state_off: 'OFF',
        qos: 1,
        ...common,
      }),
      message('button', `${source}_capture`, {
        name: `${source} take snapshot`,
        icon: 'mdi:camera',
        command_topic: topics.request('snapshot'),
        payload_press: request({}),
        qos: 1,
        ...common,
      }),
    );
  }
  return messages;
}

export function discoveryOptions(config: Config, extra: Pick<DiscoveryOptions, 'version' | 'modelName'>): DiscoveryOptions {
  return {
    deviceId: config.deviceId,
    baseTopic: config.mqtt.baseTopic,
    discoveryPrefix: config.homeassistant.discoveryPrefix,
    sources: config.sources.map((s) => s.id),
    ...extra,
  };
}

/** A recorded topic is only ever cleared if it looks like one of ours: a damaged file must not wipe other retained topics. */
const OUR_TOPIC = /^[^#+]+\/(sensor|image|switch|button)\/inceptiond_[A-Za-z0-9_-]+\/[A-Za-z0-9_-]+\/config$/;

/** The topics listed in the state file; none when it is missing or unreadable (nothing known to clear). */
export async function readDiscoveryState(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const parsed = JSON.parse(text) as { topics?: unknown };
  if (!Array.isArray(parsed.topics)) throw new Error(`${file}: "topics" is not a list`);
  return parsed.topics.filter((t): t is string => typeof t === 'string' && OUR_TOPIC.test(t));
}

/** Replaces the file atomically (a torn file would forget topics); removes it when there is nothing to list. */
export async function writeDiscoveryState(file: string, topics: string[]): Promise<void> {
  if (topics.length === 0) {
    await unlink(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    return;
  }
  await writeFileAtomic(file, `${JSON.stringify({ topics: [...topics].sort() }, null, 2)}\n`);
}

const listed = (topics: Set<string>) => [...topics].sort().join('\n');

export function homeAssistantFeature(): Feature {
  let ctx: FeatureContext | undefined;
  let enabled = false;
  let statusTopic = '';
  let stateFile = '';
  /** Discovery configs to keep published. */
  let wanted: DiscoveryMessage[] = [];
  /** Recorded topics not wanted any more, cleared at the next connection. */
  let toClear = new Set<string>();
  /** What the state file lists: wanted ∪ toClear. */
  let recorded = new Set<string>();
  const subscribed = new Set<string>();
  let writes: Promise<void> = Promise.resolve();

  const persist = (file: string, topics: string[]) => {
    writes = writes
      .then(() => writeDiscoveryState(file, topics))
      .catch((err: unknown) =>
        ctx?.logger.warn({ err, file }, 'homeassistant: could not record the discovery topics; removal may miss some'),
      );
    return writes;
  };

  /** Sends the pending clears and the wanted configs when connected; the next connection does it otherwise. */
  const flush = () => {
    const c = ctx;
    if (!c?.publisher.stats().connected) return;
    const cleared: string[] = [];
    for (const topic of toClear) {
      if (!c.publisher.publishNow(topic, '', { qos: 1, retain: true })) break;
      cleared.push(topic);
    }
    let sent = 0;
    for (const m of wanted) {
      if (!c.publisher.publishNow(m.topic, JSON.stringify(m.payload), { qos: 1, retain: true })) break;
      sent++;
    }
    if (cleared.length > 0) {
      for (const topic of cleared) {
        toClear.delete(topic);
        recorded.delete(topic);
      }
      void persist(stateFile, [...recorded]);
    }
    if (sent > 0 || cleared.length > 0) c.logger.info({ entities: sent, removed: cleared.length }, 'homeassistant: discovery sent');
  };

  const onBirth = (topic: string, payload: Buffer) => {
    // The publisher has no unsubscribe: a topic given up by a reload, or discovery turned off, is ignored here.
    if (!enabled || topic !== statusTopic || payload.toString('utf8').trim() !== 'online') return;
    flush();
  };

  const apply = async (config: Config) => {
    const c = ctx;
    if (!c) return;
    enabled = config.homeassistant.enabled;
    statusTopic = config.homeassistant.statusTopic;
    const file = path.join(config.stateDir, DISCOVERY_STATE_FILE);
    const status = c.status.payload().model as { name?: unknown } | undefined;
    const modelName = typeof status?.name === 'string' ? status.name : undefined;
    const next = enabled ? discoveryMessages(discoveryOptions(config, { version: packageVersion, modelName })) : [];
    const nextTopics = new Set(next.map((m) => m.topic));
    const before = listed(recorded);
    wanted = next;
    toClear = new Set([...recorded].filter((t) => !nextTopics.has(t)));
    recorded = new Set([...nextTopics, ...toClear]);
    // Recorded before anything is published, so a crash right after cannot leave an unlisted config behind.
    if (file !== stateFile || listed(recorded) !== before) await persist(file, [...recorded]);
    stateFile = file;
    if (enabled && !subscribed.has(statusTopic)) {
      subscribed.add(statusTopic);
      c.publisher.subscribe(statusTopic, onBirth);
    }
    flush();
  };

  return {
    name: 'homeassistant',
    async start(context) {
      ctx = context;
      const file = path.join(context.config().stateDir, DISCOVERY_STATE_FILE);
      try {
        recorded = new Set(await readDiscoveryState(file));
      } catch (err) {
        context.logger.warn({ err, file }, 'homeassistant: unreadable list of discovery topics; earlier ones will not be removed');
        recorded = new Set();
      }
      stateFile = file;
      context.publisher.onConnectionChange((connected) => {
        if (connected) flush();
      });
      await apply(context.config());
    },
    async reload(config) {
      await apply(config);
    },
    async stop() {
      ctx = undefined;
      enabled = false;
      await writes;
    },
  };
}
