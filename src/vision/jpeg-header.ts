/**
 * A JPEG's size and EXIF orientation, read from its header in JavaScript. The preprocessor needs them
 * before decoding (the pixel limit, the upright size it reports), and asking sharp means a second round
 * trip through libuv's pool per frame; the markers before the scan are a few hundred bytes to walk
 * (docs/ARCHITECTURE.md, "Threads"). Anything unexpected returns undefined and the caller asks sharp,
 * whose errors name what is wrong with the file.
 */

export interface JpegHeader {
  width: number;
  height: number;
  /** EXIF orientation 1–8 (1 when absent or out of range). */
  orientation: number;
}

const MARKER = 0xff;
const SOI = 0xd8;
const SOS = 0xda;
const APP1 = 0xe1;
/** SOF0–SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames. */
function isStartOfFrame(marker: number): boolean {
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}
/** Markers that stand alone, without a length: TEM, RST0–7, SOI, EOI. */
function isStandalone(marker: number): boolean {
  return marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9);
}

/** Size and orientation of a baseline or progressive JPEG, or undefined when `data` is not one this can read. */
export function readJpegHeader(data: Uint8Array): JpegHeader | undefined {
  if (data.length < 4 || data[0] !== MARKER || data[1] !== SOI) return undefined;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let orientation = 1;
  let pos = 2;
  while (pos + 4 <= data.length) {
    if (data[pos] !== MARKER) return undefined;
    const marker = data[pos + 1]!;
    if (marker === MARKER) {
      pos += 1; // fill bytes before a marker
      continue;
    }
    if (isStandalone(marker)) {
      pos += 2;
      continue;
    }
    if (marker === SOS) return undefined; // the scan began without a frame header
    const length = view.getUint16(pos + 2);
    const body = pos + 4;
    const end = pos + 2 + length;
    if (length < 2 || end > data.length) return undefined;
    if (marker === APP1 && orientation === 1) orientation = exifOrientation(view, body, end) ?? 1;
    if (isStartOfFrame(marker)) {
      if (length < 7) return undefined;
      const height = view.getUint16(body + 1);
      const width = view.getUint16(body + 3);
      // Height 0 means "defined later by a DNL marker": rare, and sharp knows how to read it.
      if (width === 0 || height === 0) return undefined;
      return { width, height, orientation };
    }
    pos = end;
  }
  return undefined;
}

/** The Orientation tag (0x0112) of IFD0 in an APP1 segment's body [start, end), if it is EXIF and holds one. */
function exifOrientation(view: DataView, start: number, end: number): number | undefined {
  // "Exif\0\0", then a TIFF header: byte order, 42, offset of IFD0 (from the TIFF header's start).
  if (end - start < 14 || view.getUint32(start) !== 0x45786966 || view.getUint16(start + 4) !== 0) return undefined;
  const tiff = start + 6;
  const order = view.getUint16(tiff);
  if (order !== 0x4949 && order !== 0x4d4d) return undefined;
  const little = order === 0x4949;
  if (view.getUint16(tiff + 2, little) !== 42) return undefined;
  const ifd = tiff + view.getUint32(tiff + 4, little);
  if (ifd + 2 > end) return undefined;
  const entries = view.getUint16(ifd, little);
  for (let i = 0; i < entries; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > end) return undefined;
    if (view.getUint16(entry, little) !== 0x0112) continue;
    // Type SHORT, one value, stored in the first two bytes of the value field.
    if (view.getUint16(entry + 2, little) !== 3 || view.getUint32(entry + 4, little) !== 1) return undefined;
    const value = view.getUint16(entry + 8, little);
    return value >= 1 && value <= 8 ? value : undefined;
  }
  return undefined;
}
