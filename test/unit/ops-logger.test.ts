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
});
