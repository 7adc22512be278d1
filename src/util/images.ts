// Listing the images of a folder or glob, for calibration and evaluation. tinyglobby is the only package
// here (util/ imports no other src folder).
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

/** File extensions taken as images (all of them decodable by sharp). */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp']);

/** A folder or glob that cannot be read or holds no images; the message names it. */
export class ImageListError extends Error {
  override name = 'ImageListError';
}

export interface ListImageFilesOptions {
  /**
   * Take `pathOrGlob` as a folder only (the quantizer's library API): no glob, no single file, paths
   * joined to the folder as given, and a missing folder "cannot be read". Default false: a folder, a
   * glob or one file, absolute paths, and a missing path "does not exist".
   */
  folderOnly?: boolean;
}

/**
 * Image files of a folder (not recursive) or a glob, sorted. `what` names the list in errors
 * ("calibration folder", "image folder"). A missing path or one without images is an ImageListError.
 */
export async function listImageFiles(pathOrGlob: string, what: string, opts: ListImageFilesOptions = {}): Promise<string[]> {
  // Imported here: util/ is loaded by every command (ops/ uses it), most never list images.
  const { glob, isDynamicPattern } = await import('tinyglobby');
  let candidates: string[];
  if (opts.folderOnly) {
    candidates = (await readFolder(pathOrGlob, what)).map((e) => path.join(pathOrGlob, e));
  } else if (isDynamicPattern(pathOrGlob)) {
    candidates = await glob(pathOrGlob, { absolute: true, onlyFiles: true, expandDirectories: false });
    if (candidates.length === 0) throw new ImageListError(`${what} ${pathOrGlob} matches no files`);
  } else {
    let isDir: boolean;
    try {
      isDir = (await stat(pathOrGlob)).isDirectory();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ImageListError(
        code === 'ENOENT' ? `${what} ${pathOrGlob} does not exist` : `${what} ${pathOrGlob} cannot be read: ${(err as Error).message}`,
      );
    }
    candidates = isDir ? (await readFolder(pathOrGlob, what)).map((e) => path.resolve(pathOrGlob, e)) : [path.resolve(pathOrGlob)];
  }
  const images = candidates.filter((f) => IMAGE_EXTENSIONS.has(path.extname(f).toLowerCase())).sort();
  if (images.length === 0) {
    throw new ImageListError(`${what} ${pathOrGlob} has no images (${[...IMAGE_EXTENSIONS].join(' ')})`);
  }
  return images;
}

async function readFolder(dir: string, what: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    throw new ImageListError(`${what} ${dir} cannot be read: ${(err as Error).message}`);
  }
}
