// A stand-in for Debian's fswebcam 20140113, started through the wrapper that installFakeFswebcam
// writes. Like the real one it writes the image to the last argument, prints coloured errors on stderr
// and exits 0 on most failures. The behaviour is read from a mode file at every start, so a running
// daemon can be switched between behaviours. Every start is logged as one JSON line {argv, pid, mode}.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dir = process.env.FAKE_FSWEBCAM_DIR;
if (!dir) {
  process.stderr.write('fake fswebcam: FAKE_FSWEBCAM_DIR is not set\n');
  process.exit(2);
}
const argv = process.argv.slice(2);
const output = argv[argv.length - 1];
let mode = 'ok';
try {
  mode = fs.readFileSync(path.join(dir, 'mode'), 'utf8').trim() || 'ok';
} catch {
  // no mode file: behave normally
}
fs.appendFileSync(path.join(dir, 'argv.log'), `${JSON.stringify({ argv, pid: process.pid, mode })}\n`);

const red = (text) => `\u001b[31m${text}\n\u001b[0m`;
const image = () => fs.readFileSync(path.join(dir, 'image.jpg'));

switch (mode) {
  case 'ok':
    fs.writeFileSync(output, image());
    break;
  case 'no-device':
    process.stderr.write(red('stat: No such file or directory'));
    break;
  case 'no-frames':
    process.stderr.write(red('Timed out waiting for frame!') + red('No frames captured.'));
    break;
  case 'busy':
    process.stderr.write(red('Error opening device: /dev/video0') + red('open: Device or resource busy'));
    break;
  case 'palette':
    process.stderr.write(red('Unable to find a compatible palette format.'));
    break;
  case 'exit-1':
    process.stderr.write(red('Error: capture failed with code 1'));
    process.exitCode = 1;
    break;
  case 'truncated': {
    const data = image();
    fs.writeFileSync(output, data.subarray(0, Math.floor(data.length / 2)));
    break;
  }
  case 'empty':
    fs.writeFileSync(output, Buffer.alloc(0));
    break;
  case 'not-jpeg':
    fs.writeFileSync(output, Buffer.from('\u0089PNG\r\n\u001a\n this is not a JPEG', 'latin1'));
    break;
  case 'no-output':
    // exit 0, nothing on stderr, no file
    break;
  case 'hang-ignore-term':
    process.on('SIGTERM', () => undefined);
    setInterval(() => undefined, 1000); // as 'hang', without ending on SIGTERM
    break;
  case 'hang':
    setInterval(() => undefined, 60_000);
    break;
  default:
    process.stderr.write(`fake fswebcam: unknown mode ${JSON.stringify(mode)}\n`);
    process.exitCode = 2;
}
