// The optional features and the contract they are built on (events, context).
import type { Config } from '../config/index.js';
import { controlFeature } from './control.js';
import { httpFeature, type HttpFeature } from './http.js';
import { homeAssistantFeature } from './homeassistant.js';
import { metricsTopicFeature } from './metrics-topic.js';
import { snapshotOnChangeFeature } from './snapshot.js';
import { sourceStatusFeature } from './source-status.js';
import type { Feature } from './types.js';

export { DaemonEventBus, type DaemonEvents, type DaemonState, type SourceState } from './events.js';
export type { DaemonOperations, Feature, FeatureContext, HealthReport, LatestFrame, ReloadOutcome, SourceControl } from './types.js';
export type { HttpFeature } from './http.js';

/** The features this configuration enables, in start order. */
export function enabledFeatures(config: Config): { features: Feature[]; http?: HttpFeature } {
  const http = config.http.enabled ? httpFeature() : undefined;
  const features: Feature[] = [
    sourceStatusFeature(),
    controlFeature(),
    metricsTopicFeature(),
    snapshotOnChangeFeature(),
    // Always: with discovery off it only clears what an earlier run announced.
    homeAssistantFeature(),
    ...(http ? [http] : []),
  ];
  return { features, http };
}
