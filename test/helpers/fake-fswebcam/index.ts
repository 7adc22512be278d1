/**
 * A fake `fswebcam` for tests: put `binDir` first on PATH (in this process with `usePath()`, or in a
 * child's env with `pathWith()`) and node-webcam runs it instead of the real one.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

export type FakeFswebcamMode =
  /** writes the image to the last argument, exit 0 */
  | 'ok'
  /** Debian's message for a missing device, exit 0, no file */
  | 'no-device'
  /** "Timed out waiting for frame!" + "No frames captured.", exit 0, no file */
  | 'no-frames'
  /** "open: Device or resource busy", exit 0, no file */
  | 'busy'
  /** "Unable to find a compatible palette format.", exit 0, no file */
  | 'palette'
  /** a message on stderr, exit 1 (as newer fswebcam releases do) */
  | 'exit-1'
  /** first half of the image: no EOI marker */
  | 'truncated'
  /** an empty output file */
  | 'empty'
  /** a PNG header instead of a JPEG */
  | 'not-jpeg'
  /** exit 0, no stderr, no file */
  | 'no-output'
  /** never exits; dies on SIGTERM */
  | 'hang'
  /** never exits; ignores SIGTERM, only SIGKILL ends it */
  | 'hang-ignore-term';

export interface FakeFswebcamInvocation {
  argv: string[];
  pid: number;
  mode: FakeFswebcamMode;
}

export interface FakeFswebcam {
  /** Folder holding the `fswebcam` executable: put it first on PATH. */
  binDir: string;
  /** Absolute path of the fake `fswebcam`. */
  bin: string;
  /** JSON lines, one per start of the fake: {argv, pid, mode}. */
  argvLog: string;
  /** The JPEG that mode 'ok' writes. */
  image: Buffer;
  /** Takes effect at the fake's next start (also for a daemon that is already running). */
  setMode(mode: FakeFswebcamMode): void;
  /** Replaces the JPEG that mode 'ok' writes. */
  setImage(jpeg: Buffer): Promise<void>;
  /** Every start of the fake so far, oldest first. */
  invocations(): Promise<FakeFswebcamInvocation[]>;
  /** A PATH value with binDir first, for a child process's env. */
  pathWith(pathValue?: string): string;
  /** Puts binDir first on this process's PATH; returns a function that restores the old PATH. */
  usePath(): () => void;
}

const PROGRAM = fileURLToPath(new URL('./fswebcam.cjs', import.meta.url));

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Installs a fake fswebcam into `dir` (created if missing). Its state (mode, image, argv log) lives in
 * `dir`, so several fakes can coexist in one test run.
 */
export async function installFakeFswebcam(dir: string, options: { mode?: FakeFswebcamMode; image?: Buffer } = {}): Promise<FakeFswebcam> {
  const binDir = path.join(dir, 'bin');
  await mkdir(binDir, { recursive: true });
  const bin = path.join(binDir, 'fswebcam');
  const argvLog = path.join(dir, 'argv.log');
  const modeFile = path.join(dir, 'mode');
  const imageFile = path.join(dir, 'image.jpg');

  // exec keeps the pid, so the pid logged by the program is the one `timeout` signals.
  const wrapper = `#!/bin/sh\nFAKE_FSWEBCAM_DIR=${shellQuote(dir)} exec ${shellQuote(process.execPath)} ${shellQuote(PROGRAM)} "$@"\n`;
  await writeFile(bin, wrapper);
  await chmod(bin, 0o755);
  await writeFile(argvLog, '');
  await writeFile(modeFile, options.mode ?? 'ok');
  const image =
    options.image ??
    (await sharp({ create: { width: 64, height: 48, channels: 3, background: '#336699' } })
      .jpeg()
      .toBuffer());
  await writeFile(imageFile, image);

  const fake: FakeFswebcam = {
    binDir,
    bin,
    argvLog,
    image,
    setMode(mode) {
      writeFileSync(modeFile, mode);
    },
    async setImage(jpeg) {
      fake.image = jpeg;
      await writeFile(imageFile, jpeg);
    },
    async invocations() {
      const text = await readFile(argvLog, 'utf8');
      return text
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as FakeFswebcamInvocation);
    },
    pathWith(pathValue = process.env.PATH ?? '') {
      return pathValue ? `${binDir}${path.delimiter}${pathValue}` : binDir;
    },
    usePath() {
      const previous = process.env.PATH;
      process.env.PATH = fake.pathWith(previous);
      return () => {
        if (previous === undefined) delete process.env.PATH;
        else process.env.PATH = previous;
      };
    },
  };
  return fake;
}
