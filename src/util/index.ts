// Small helpers shared by every layer. util/ is the bottom: it imports node: modules (and tinyglobby),
// never another src folder, so anything may use it.
export { fileSha256, isFile, pathExists, requireFile, writeFileAtomic } from './fs.js';
export { IMAGE_EXTENSIONS, ImageListError, listImageFiles, type ListImageFilesOptions } from './images.js';
export { LogThrottle } from './log-throttle.js';
export { round2 } from './numbers.js';
export { freePort } from './net.js';
export { mulberry32 } from './random.js';
export {
  byThreadRole,
  INFERENCE_THREAD_NAME,
  THREAD_ROLES,
  ThreadCpuMeter,
  nameCurrentThread,
  parseThreadStat,
  readThreadTimes,
  type ThreadRole,
  type ThreadTimes,
} from './threads.js';
