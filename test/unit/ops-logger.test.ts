import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, isJournalStream, journalPriority, packageVersion, resolveLogFormat } from '../../src/ops/index.js';

/** A destination collecting lines; `isTTY` makes it look like a terminal to format auto. */
function capture(isTTY?: boolean) {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  if (isTTY !== undefined) Object.assign(destination, { isTTY });
  return { lines, destination };
}

const isJson = (line: string) => {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
};

describe('createLogger', () => {
  it('writes one JSON object per line with ISO time, pid, hostname and version', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', name: 'inceptiond', destination, env: {} });
    logger.info({ source: 'camera' }, 'started');
    logger.debug('not at info');
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(entry).toMatchObject({
      level: 30,
      name: 'inceptiond',
      pid: process.pid,
      version: packageVersion,
      source: 'camera',
      msg: 'started',
    });
    expect(new Date(entry.time as string).toISOString()).toBe(entry.time);
    expect(typeof entry.hostname).toBe('string');
  });

  it('serialises errors and redacts secrets', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', destination, env: {} });
    logger.error({ err: new Error('boom'), mqtt: { password: 'hunter2' }, password: 'pw' }, 'failed');
    const entry = JSON.parse(lines[0]!) as { err: { message: string; stack: string }; mqtt: { password: string }; password: string };
    expect(entry.err.message).toBe('boom');
    expect(entry.err.stack).toContain('Error: boom');
    expect(entry.mqtt.password).toBe('[redacted]');
    expect(entry.password).toBe('[redacted]');
    expect(lines[0]).not.toContain('hunter2');
  });

  it('masks credentials in URLs everywhere in a line: message, error message and stack, nested objects, bindings', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', destination, env: {} }).child({ input: 'rtsp://admin:S3cr3t@cam/stream' });
    const err = new Error('ffmpeg source "door" (rtsp://admin:S3cr3t@10.0.0.5/x): Connection refused');
    logger.warn(
      { err, deep: { list: [{ url: 'mqtt://u:S3cr3t@broker' }], q: 'http://cam/snap?password=S3cr3t&x=1' } },
      'at mqtts://u:S3cr3t@b',
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain('S3cr3t');
    const entry = JSON.parse(lines[0]!) as {
      msg: string;
      input: string;
      err: { message: string; stack: string };
      deep: { list: Array<{ url: string }>; q: string };
    };
    expect(entry.msg).toBe('at mqtts://u:***@b');
    expect(entry.input).toBe('rtsp://admin:***@cam/stream');
    expect(entry.err.message).toBe('ffmpeg source "door" (rtsp://admin:***@10.0.0.5/x): Connection refused');
    expect(entry.err.stack).toContain('rtsp://admin:***@10.0.0.5/x');
    expect(entry.deep.list[0]!.url).toBe('mqtt://u:***@broker');
    expect(entry.deep.q).toBe('http://cam/snap?password=***&x=1');
  });

  it('keeps a line valid JSON whatever stands after a masked secret', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', destination, env: {} });
    logger.info({ text: 'http://h/?token=abc"quoted\\ and \\"', other: 'x' }, 'm');
    const entry = JSON.parse(lines[0]!) as { text: string; other: string };
    expect(entry.text).toBe('http://h/?token=***"quoted\\ and \\"');
    expect(entry.other).toBe('x');
  });

  it('leaves lines without credentials as pino wrote them', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', destination, env: {} });
    logger.info({ url: 'mqtts://broker.example:8883', at: 'user@host' }, 'connected');
    expect(JSON.parse(lines[0]!)).toMatchObject({ url: 'mqtts://broker.example:8883', at: 'user@host', msg: 'connected' });
  });
});

describe('journald priorities', () => {
  it('prefixes each JSON line with its sd-daemon priority when JOURNAL_STREAM is set', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'trace', destination, env: { JOURNAL_STREAM: '8:12345' } });
    logger.fatal('f');
    logger.error('e');
    logger.warn({ source: 'camera' }, 'w');
    logger.info('i');
    logger.debug('d');
    logger.trace('t');
    expect(lines.map((l) => l.slice(0, 4))).toEqual(['<2>{', '<3>{', '<4>{', '<6>{', '<7>{', '<7>{']);
    // journald strips the prefix: what remains is the JSON line as before
    const warn = JSON.parse(lines[2]!.slice(3)) as Record<string, unknown>;
    expect(warn).toMatchObject({ level: 40, source: 'camera', msg: 'w' });
  });

  it('writes plain JSON lines without JOURNAL_STREAM', () => {
    const { lines, destination } = capture();
    createLogger({ level: 'info', destination, env: {} }).warn('w');
    expect(lines[0]!.startsWith('{')).toBe(true);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, msg: 'w' });
  });

  it('masks credentials before the prefix, and keeps the priority of a masked line', () => {
    const { lines, destination } = capture();
    createLogger({ level: 'info', destination, env: { JOURNAL_STREAM: '8:1' } }).error({ url: 'rtsp://u:S3cr3t@cam/x' }, 'failed');
    expect(lines[0]!.startsWith('<3>{')).toBe(true);
    expect(lines[0]).not.toContain('S3cr3t');
    expect(JSON.parse(lines[0]!.slice(3))).toMatchObject({ url: 'rtsp://u:***@cam/x' });
  });

  it('maps pino levels to syslog severities', () => {
    expect([60, 50, 40, 30, 20, 10].map(journalPriority)).toEqual([2, 3, 4, 6, 7, 7]);
  });

  describe('on a file descriptor', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'logger-journal-'));
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    /** Logs a warning to a file through its fd, with JOURNAL_STREAM naming that file (or another). */
    function logToFile(name: string, journalStream: (st: { dev: bigint; ino: bigint }) => string | undefined): string {
      const file = path.join(dir, name);
      const fd = openSync(file, 'w');
      try {
        const st = fstatSync(fd, { bigint: true });
        const value = journalStream(st);
        const env = value === undefined ? {} : { JOURNAL_STREAM: value };
        expect(isJournalStream(fd, env)).toBe(value === `${st.dev}:${st.ino}`);
        createLogger({ level: 'info', fd, env, format: 'auto' }).warn('on the fd');
      } finally {
        closeSync(fd);
      }
      return readFileSync(file, 'utf8');
    }

    it('prefixes when JOURNAL_STREAM is the device:inode of the fd (what systemd sets)', () => {
      const text = logToFile('journal', (st) => `${st.dev}:${st.ino}`);
      expect(text.startsWith('<4>{')).toBe(true);
      expect(JSON.parse(text.slice(3))).toMatchObject({ level: 40, msg: 'on the fd' });
    });

    it('does not prefix when JOURNAL_STREAM names another stream (inherited by a shell, output elsewhere) or is absent', () => {
      for (const [name, value] of [
        ['other', (st: { dev: bigint; ino: bigint }) => `${st.dev}:${st.ino + 1n}`],
        ['absent', () => undefined],
      ] as const) {
        const text = logToFile(name, value);
        expect(text.startsWith('{'), name).toBe(true);
        expect(JSON.parse(text)).toMatchObject({ msg: 'on the fd' });
      }
    });
  });
});

describe('log format', () => {
  it('pretty: readable lines, no JSON, with level, message and fields', () => {
    const { lines, destination } = capture();
    createLogger({ level: 'info', name: 'inceptiond', destination, env: {}, format: 'pretty' }).warn({ source: 'door' }, 'capture failing');
    expect(lines).toHaveLength(1);
    expect(isJson(lines[0]!)).toBe(false);
    expect(lines[0]).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] WARN: capture failing .*"source":"door"/);
  });

  it('pretty still masks URL credentials and redacts secrets', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', destination, env: {}, format: 'pretty' });
    logger.error({ err: new Error('rtsp://admin:S3cr3t@10.0.0.5/x refused'), mqtt: { password: 'hunter2' } }, 'at mqtts://u:S3cr3t@b');
    const text = lines.join('\n');
    expect(text).toContain('ERROR: at mqtts://u:***@b');
    expect(text).toContain('rtsp://admin:***@10.0.0.5/x refused');
    expect(text).toContain('[redacted]');
    expect(text).not.toContain('S3cr3t');
    expect(text).not.toContain('hunter2');
  });

  it('pretty under journald: every line of an entry carries the priority', () => {
    const { lines, destination } = capture();
    createLogger({ level: 'info', destination, env: { JOURNAL_STREAM: '8:1' }, format: 'pretty' }).error(
      { err: new Error('boom') },
      'failed',
    );
    expect(lines.length).toBeGreaterThan(1); // the stack spans lines
    for (const line of lines) expect(line.startsWith('<3>')).toBe(true);
  });

  it('json: JSON lines even on a terminal', () => {
    const { lines, destination } = capture(true);
    createLogger({ level: 'info', destination, env: {}, format: 'json' }).info('x');
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: 'x' });
  });

  it('auto follows isTTY: pretty on a terminal, JSON elsewhere', () => {
    const tty = capture(true);
    createLogger({ level: 'info', destination: tty.destination, env: {}, format: 'auto' }).info('x');
    expect(isJson(tty.lines[0]!)).toBe(false);
    expect(tty.lines[0]).toContain('\u001b['); // coloured on a terminal
    expect(tty.lines[0]!.replace(/\u001b\[\d+m/g, '')).toContain('INFO: x');
    const pipe = capture(false);
    createLogger({ level: 'info', destination: pipe.destination, env: {} }).info('x');
    expect(JSON.parse(pipe.lines[0]!)).toMatchObject({ msg: 'x' });
    expect(resolveLogFormat('auto', true)).toBe('pretty');
    expect(resolveLogFormat('auto', false)).toBe('json');
    expect(resolveLogFormat('pretty', false)).toBe('pretty');
    expect(resolveLogFormat('json', true)).toBe('json');
  });

  it('no colours unless the output is a terminal and NO_COLOR is unset', () => {
    const plain = capture(false);
    createLogger({ level: 'info', destination: plain.destination, env: {}, format: 'pretty' }).warn('x');
    expect(plain.lines[0]).not.toContain('\u001b[');
    const noColor = capture(true);
    createLogger({ level: 'info', destination: noColor.destination, env: { NO_COLOR: '1' }, format: 'auto' }).warn('x');
    expect(noColor.lines[0]).not.toContain('\u001b[');
  });
});
