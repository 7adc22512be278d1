// The single source of truth for configuration keys, their docs and their defaults.
import os from 'node:os';
import type convict from 'convict';
import {
  BOOLEAN,
  EXECUTION_PROVIDER_LIST,
  MQTT_URL,
  NATURAL,
  NON_EMPTY_STRING,
  PORT,
  PROVIDER_OPTIONS,
  SOURCE_ID,
  SOURCE_LIST,
  STRING,
  TOPIC_PREFIX,
  TOPIC_SAFE_NAME,
  CONTROL_OPERATION_LIST,
  integer,
  numberInRange,
  oneOf,
} from './formats.js';
import {
  CALIBRATION_METHODS,
  CAPTURE_BACKENDS,
  DEFAULT_CALIBRATION_METHOD,
  GRAPH_OPTIMIZATION_LEVELS,
  LOG_FORMATS,
  LOG_LEVELS,
  MODEL_PRECISIONS,
  PUBLISH_POLICIES,
  QUANTIZATION_TARGETS,
  type CaptureConfig,
  type SourceStages,
} from './types.js';
import { CAPTURE_BACKEND_TABLE, COMMON_CAPTURE_FIELDS, DEFAULT_CAPTURE_BACKEND, describeCaptureBackends } from '../capture/index.js';
import { fieldLeaves } from './field-leaf.js';

export const ENV_PREFIX = 'INCEPTIOND';

/** A schema tree: groups are objects without `default`, leaves are convict properties. */
export type SchemaNode = { [key: string]: SchemaNode | convict.SchemaObj };

export function isLeaf(node: SchemaNode | convict.SchemaObj): node is convict.SchemaObj {
  return Object.hasOwn(node, 'default');
}

function leaf(doc: string, format: string, value: unknown): convict.SchemaObj {
  return { doc, format, default: value };
}

/** `deviceId`'s default: the hostname, lower-cased and made topic-safe. */
export function deviceIdFromHostname(hostname: string): string {
  const id = hostname
    .toLowerCase()
    .replace(/[^a-z0-9_-]/g, '-')
    .slice(0, 64);
  return /[a-z0-9]/.test(id) ? id : 'inceptiond';
}

/** systemd passes one path per `StateDirectory=` entry, colon-separated; ours is the first. */
function firstPath(value: string | undefined): string | undefined {
  const first = value?.split(':')[0];
  return first ? first : undefined;
}

/**
 * The capture keys, shared by `capture` and each `sources` entry (which take their defaults from `capture`).
 * Each backend's group comes from its row in capture's registry, ranges included.
 */
export function captureSchema(): SchemaNode {
  const schema: SchemaNode = {
    backend: leaf(`How frames are captured: ${describeCaptureBackends()}`, oneOf(CAPTURE_BACKENDS), DEFAULT_CAPTURE_BACKEND),
    ...fieldLeaves('capture', COMMON_CAPTURE_FIELDS),
  };
  for (const name of CAPTURE_BACKENDS) schema[name] = fieldLeaves(`capture.${name}`, CAPTURE_BACKEND_TABLE[name].fields);
  return schema;
}

/** The per-source stages (daemon/source-pipeline.ts): top-level defaults that a `sources` entry may override. */
export function sourceStagesSchema(): SchemaNode {
  return {
    publish: {
      policy: leaf(
        'Which Results are published: every one, or on a change (the top label changes, or its score moves by more than scoreDelta, or heartbeatSec passed). seq counts published Results only',
        oneOf(PUBLISH_POLICIES),
        'every',
      ),
      scoreDelta: leaf('policy change: a move of the top score by more than this publishes', numberInRange(0, 1), 0.1),
      heartbeatSec: leaf('policy change: publish at least this often even without a change (0 = only on a change)', NATURAL, 60),
      maxPerSec: leaf(
        'At most this many Results per second from a source (0 = no cap); the rest are counted, not published',
        numberInRange(0, 1000),
        0,
      ),
    },
    motion: {
      enabled: leaf('Skip inference while the frame stays like the last inferred one (a grey thumbnail difference)', BOOLEAN, false),
      threshold: leaf(
        "Fraction of the thumbnail's pixels whose brightness must change (by more than 8 %) for a frame to be inferred",
        numberInRange(0, 1),
        0.02,
      ),
      maxIntervalSec: leaf('Infer at least this often, motion or not (0 = only on motion)', NATURAL, 60),
    },
    snapshot: {
      onChange: leaf('Publish the frame on <base>/<source>/snapshot when the top label changes', BOOLEAN, false),
      minIntervalSec: leaf('At most one snapshot on change per this many seconds', NATURAL, 10),
      retain: leaf('Snapshots are retained on the broker (the newest stays visible, e.g. to Home Assistant)', BOOLEAN, true),
      maxBytes: leaf('Largest snapshot in bytes; a larger frame is re-encoded smaller to fit', integer(4096, 16 * 1024 * 1024), 512 * 1024),
    },
  };
}

/** Schema of one `sources` entry: `id`, the capture keys and the stages, defaulting to the effective top-level values. */
export function sourceEntrySchema(defaults: { capture: CaptureConfig } & SourceStages): SchemaNode {
  const schema: SchemaNode = {
    id: { doc: 'Topic-safe source name', format: SOURCE_ID, default: null },
    ...captureSchema(),
    ...sourceStagesSchema(),
  };
  const { capture, ...stages } = defaults;
  applyDefaults(schema, { ...capture, ...structuredClone(stages) });
  return schema;
}

function applyDefaults(node: SchemaNode, values: Record<string, unknown>): void {
  for (const [key, child] of Object.entries(node)) {
    if (!(key in values)) continue;
    if (isLeaf(child)) child.default = structuredClone(values[key]);
    else applyDefaults(child, values[key] as Record<string, unknown>);
  }
}

/**
 * The whole schema. Defaults that depend on the machine (hostname, systemd's directories) are read from
 * `env` and `os` here, so tests can pass their own environment.
 */
export function buildSchema(env: NodeJS.ProcessEnv): SchemaNode {
  const schema: SchemaNode = {
    deviceId: leaf(
      'Name of this device in topics and client ids (default: the hostname, made topic-safe)',
      TOPIC_SAFE_NAME,
      deviceIdFromHostname(os.hostname()),
    ),
    stateDir: leaf(
      'Outbox, sequence counters and model cache (default: $STATE_DIRECTORY under systemd)',
      NON_EMPTY_STRING,
      firstPath(env.STATE_DIRECTORY) ?? '/var/lib/inceptiond',
    ),
    runtimeDir: leaf(
      'Temporary capture files (default: $RUNTIME_DIRECTORY under systemd, else the OS temp dir)',
      NON_EMPTY_STRING,
      firstPath(env.RUNTIME_DIRECTORY) ?? os.tmpdir(),
    ),
    capture: captureSchema(),
    sources: leaf(
      'Several cameras: [{"id": "door", "backend": "ffmpeg", "ffmpeg": {"input": "rtsp://…"}}, …]; keys left out come from capture. Empty = one source "camera" from capture',
      SOURCE_LIST,
      [],
    ),
    model: {
      path: leaf('ONNX model file ("" = build the Inception V2 topology into cacheDir)', STRING, ''),
      manifest: leaf('Model manifest ("" = the one beside the model)', STRING, ''),
      precision: leaf(
        'Which precision to run: auto (an INT8 model as is, the built model quantized to INT8 — FP32 when webgpu is the first provider —, a configured FP32 model as FP32), fp32 (an INT8 model is refused) or int8 (an FP32 model is quantized at startup, once, and cached in cacheDir)',
        oneOf(MODEL_PRECISIONS),
        'auto',
      ),
      cacheDir: leaf('Built and optimized models ("" = <stateDir>/models)', STRING, ''),
      calibration: {
        path: leaf(
          'Images the daemon calibrates on when it quantizes a model itself: folder or glob ("" = the files source\'s path if there is one, else the bundled models/samples)',
          STRING,
          '',
        ),
        method: leaf(
          'Calibration method when the daemon quantizes: minmax, percentile (99.999), entropy or mse (per-tensor range search)',
          oneOf(CALIBRATION_METHODS),
          DEFAULT_CALIBRATION_METHOD,
        ),
      },
      quantizationTarget: leaf(
        "The provider the daemon shapes its own INT8 model for (`model quantize --target`): auto takes the first execution provider's (qnn → qnn-htp; vsinpu, acl, xnnpack by name; anything else cpu)",
        oneOf(QUANTIZATION_TARGETS),
        'auto',
      ),
    },
    inference: {
      executionProviders: leaf('ONNX Runtime execution providers in order of preference; cpu is the fallback', EXECUTION_PROVIDER_LIST, [
        'cpu',
      ]),
      threads: leaf('Intra-op threads per worker (0 = min(cores, 2 × workers) ÷ workers, at least 1)', integer(0, 256), 0),
      workers: leaf(
        'Inference workers, each with its own ONNX Runtime session: with several sources at full rate, 2 on a two-core board gave about 20 % more Results/s for about 30 MB more memory; one source decodes one frame at a time and gains little (README, Benchmarks)',
        integer(1, 8),
        1,
      ),
      allowSpinning: leaf('Let idle ORT threads spin (faster at high frame rates, burns CPU between frames)', BOOLEAN, false),
      graphOptimizationLevel: leaf('ONNX Runtime graph optimization level', oneOf(GRAPH_OPTIMIZATION_LEVELS), 'all'),
      providerOptions: leaf(
        'Options per execution provider, passed to ONNX Runtime as given, e.g. {"qnn": {"backend_path": "libQnnHtp.so", "htp_performance_mode": "burst"}} (env: JSON)',
        PROVIDER_OPTIONS,
        {},
      ),
      cpuFallback: leaf(
        'Nodes an accelerator cannot take run on the CPU (false: such a provider is refused and the next one listed is tried)',
        BOOLEAN,
        true,
      ),
      epContextCache: leaf(
        "Keep an accelerator's compiled graph (ONNX Runtime EP context) in <stateDir>/cache/ep, so an NPU compiles the model once; redone when the model changes",
        BOOLEAN,
        true,
      ),
      runtime: leaf(
        'Another onnxruntime-node build to load instead of the bundled one, e.g. one built with QNN: its folder or main file (absolute or ./relative) or an installed package name ("" = bundled)',
        STRING,
        '',
      ),
      topK: leaf('Labels per Result', integer(1, 1000), 5),
      threshold: leaf('Labels scoring below this are left out', numberInRange(0, 1), 0),
    },
    mqtt: {
      url: leaf('Broker URL: mqtt://, mqtts://, ws://, wss://, tcp:// or ssl://', MQTT_URL, 'mqtt://127.0.0.1:1883'),
      qos: leaf('QoS of Results (status and metrics have their own)', oneOf([0, 1, 2]), 1),
      baseTopic: leaf('Topic prefix ("" = inceptiond/<deviceId>)', TOPIC_PREFIX, ''),
      clientId: leaf('MQTT client id ("" = inceptiond-<deviceId>)', STRING, ''),
      protocolVersion: leaf('MQTT protocol version: 4 (3.1.1) or 5', oneOf([4, 5]), 4),
      username: leaf('Broker user name ("" = anonymous)', STRING, ''),
      passwordFile: leaf('File holding the broker password ("" = $CREDENTIALS_DIRECTORY/mqtt-password if it exists)', STRING, ''),
      ca: leaf('CA certificate file (PEM) for mqtts/wss', STRING, ''),
      cert: leaf('Client certificate file (PEM)', STRING, ''),
      key: leaf('Client private key file (PEM)', STRING, ''),
      rejectUnauthorized: leaf('Verify the broker certificate', BOOLEAN, true),
      allowInsecure: leaf(
        'Send the user name and password over an unencrypted connection (mqtt://, ws://) to a broker that is not on this machine; refused otherwise',
        BOOLEAN,
        false,
      ),
      connectTimeoutSec: leaf('Give up a connection attempt after this many seconds', integer(1, 600), 30),
      reconnectMinSec: leaf(
        'First delay before reconnecting; it doubles (with ±20 % jitter) up to reconnectMaxSec',
        numberInRange(0.1, 3600),
        1,
      ),
      reconnectMaxSec: leaf('Longest delay between reconnection attempts', numberInRange(0.1, 3600), 60),
      keepaliveSec: leaf('MQTT keep-alive in seconds', integer(0, 65535), 30),
      sessionExpirySec: leaf(
        'MQTT 5: the broker keeps the session (subscriptions, requests sent meanwhile) this long after a disconnect, so a restarted daemon resumes it (0 = a clean session each time)',
        integer(0, 4294967295),
        3600,
      ),
      resultExpirySec: leaf(
        'MQTT 5: a Result the broker has not delivered to a subscriber within this many seconds is dropped by the broker (0 = never)',
        integer(0, 4294967295),
        0,
      ),
      embeddedBroker: {
        enabled: leaf('Run an in-process broker (development, single-box setups)', BOOLEAN, false),
        host: leaf('Address the embedded broker listens on', NON_EMPTY_STRING, '127.0.0.1'),
        port: leaf('Port of the embedded broker (0 = ephemeral)', PORT, 1883),
      },
    },
    outbox: {
      maxMessages: leaf('Results kept while the broker is unreachable; the oldest are dropped beyond this', integer(1), 100_000),
      maxBytes: leaf('Disk bytes the outbox may use', integer(1024), 64 * 1024 * 1024),
      maxAgeSec: leaf('Results older than this are dropped undelivered', integer(1), 7 * 24 * 3600),
      fsyncIntervalMs: leaf(
        'How often the outbox is flushed to the disk: 0 = before each Result is taken (durable per Result: nothing acknowledged is lost in a power cut), N = at most every N ms (a power cut may lose the last N ms)',
        NATURAL,
        1000,
      ),
    },
    http: {
      enabled: leaf('Serve /healthz, /metrics and /status', BOOLEAN, true),
      host: leaf('HTTP listen address', NON_EMPTY_STRING, '127.0.0.1'),
      port: leaf('HTTP port (0 = ephemeral)', PORT, 9464),
    },
    ...sourceStagesSchema(),
    control: {
      enabled: leaf('Answer requests on <base>/request/<op>', BOOLEAN, true),
      allow: leaf(
        'Request operations answered; the others get an error (status, metrics, info, pause, resume, snapshot, reload, set)',
        CONTROL_OPERATION_LIST,
        ['status', 'metrics', 'info', 'pause', 'resume', 'snapshot', 'reload', 'set'],
      ),
    },
    homeassistant: {
      enabled: leaf(
        'Publish Home Assistant MQTT discovery (a device with a label, score, snapshot, pause switch and snapshot button per source)',
        BOOLEAN,
        false,
      ),
      discoveryPrefix: leaf("Home Assistant's discovery prefix", TOPIC_PREFIX, 'homeassistant'),
      statusTopic: leaf("Home Assistant's birth topic: discovery is sent again when it says online", TOPIC_PREFIX, 'homeassistant/status'),
    },
    metrics: {
      intervalSec: leaf('Period of the <base>/metrics topic (0 = off)', NATURAL, 60),
    },
    health: {
      maxAckWaitSec: leaf(
        'While connected, the oldest unacknowledged Result may wait this long before /healthz says 503 and the systemd watchdog stops being fed',
        integer(1),
        120,
      ),
      stallSec: leaf(
        'A source or the inference worker that makes no progress (no frame, no handled failure, no finished inference) for this long is stuck: /healthz 503, no watchdog pings (0 = from the capture intervals and retry delays, at least 120)',
        NATURAL,
        0,
      ),
    },
    log: {
      level: leaf('Log level', oneOf(LOG_LEVELS), 'info'),
      format: leaf(
        'How log lines are written: json (one JSON object per line, for journald and collectors), pretty (readable lines) or auto (pretty when stderr is a terminal, else json)',
        oneOf(LOG_FORMATS),
        'auto',
      ),
    },
  };
  attachEnvNames(schema, []);
  return schema;
}

/** A key's words: `timeoutMs` → `timeout`, `Ms`; `epContextCache` → `ep`, `Context`, `Cache`; a run of capitals stays one word. */
function words(key: string): string[] {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .split('_')
    .filter((w) => w !== '');
}

/**
 * `INCEPTIOND_` + each segment of the dotted path with its words split by `_`, upper-cased:
 * capture.webcam.timeoutMs → INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS, mqtt.embeddedBroker.enabled →
 * INCEPTIOND_MQTT_EMBEDDED_BROKER_ENABLED.
 */
export function envName(path: readonly string[]): string {
  return [ENV_PREFIX, ...path.flatMap(words)].join('_').toUpperCase();
}

/**
 * The name before words were split (each segment upper-cased whole: INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS),
 * still read as a deprecated alias. Equal to envName for keys of one word per segment.
 */
export function legacyEnvName(path: readonly string[]): string {
  return [ENV_PREFIX, ...path].join('_').toUpperCase();
}

function attachEnvNames(node: SchemaNode, path: string[]): void {
  for (const [key, child] of Object.entries(node)) {
    if (isLeaf(child)) child.env = envName([...path, key]);
    else attachEnvNames(child, [...path, key]);
  }
}

export interface SchemaKey {
  /** Dotted path: `capture.webcam.timeoutMs`. */
  key: string;
  /** The environment variable: INCEPTIOND_CAPTURE_WEBCAM_TIMEOUT_MS. */
  env?: string;
  /** The deprecated name still read, when it differs from `env`: INCEPTIOND_CAPTURE_WEBCAM_TIMEOUTMS. */
  legacyEnv?: string;
  doc?: string;
}

/** Every leaf key (dotted) with its env var name (and deprecated alias), e.g. for docs and error messages. */
export function schemaKeys(node: SchemaNode, prefix: readonly string[] = []): SchemaKey[] {
  const out: SchemaKey[] = [];
  for (const [key, child] of Object.entries(node)) {
    const path = [...prefix, key];
    if (!isLeaf(child)) {
      out.push(...schemaKeys(child, path));
      continue;
    }
    const entry: SchemaKey = { key: path.join('.'), env: child.env, doc: child.doc };
    const legacy = legacyEnvName(path);
    if (child.env !== undefined && legacy !== child.env) entry.legacyEnv = legacy;
    out.push(entry);
  }
  return out;
}
