import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, packageVersion } from '../../src/ops/index.js';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { lines, destination };
}

describe('createLogger', () => {
  it('writes one JSON object per line with ISO time, pid, hostname and version', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', name: 'inceptiond', destination });
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
    const logger = createLogger({ level: 'info', destination });
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
    const logger = createLogger({ level: 'info', destination }).child({ input: 'rtsp://admin:S3cr3t@cam/stream' });
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
    const logger = createLogger({ level: 'info', destination });
    logger.info({ text: 'http://h/?token=abc"quoted\\ and \\"', other: 'x' }, 'm');
    const entry = JSON.parse(lines[0]!) as { text: string; other: string };
    expect(entry.text).toBe('http://h/?token=***"quoted\\ and \\"');
    expect(entry.other).toBe('x');
  });

  it('leaves lines without credentials as pino wrote them', () => {
    const { lines, destination } = capture();
    const logger = createLogger({ level: 'info', destination });
    logger.info({ url: 'mqtts://broker.example:8883', at: 'user@host' }, 'connected');
    expect(JSON.parse(lines[0]!)).toMatchObject({ url: 'mqtts://broker.example:8883', at: 'user@host', msg: 'connected' });
  });
});
