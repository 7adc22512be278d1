// The mapping moved into capture/ (its registry holds each backend's); this path stays until the
// commands that import it from here import it from capture/.
export { toSourceOptions } from './capture/index.js';
