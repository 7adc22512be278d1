// The bench's broker when Mosquitto is not installed: Aedes in its own process, so the broker's work
// is not counted as the pipeline's (on a board the broker usually runs elsewhere). Started by
// bench-broker.ts with the port as its argument; says 'ready' over IPC and runs until killed.
import pino from 'pino';
import { startEmbeddedBroker } from '../publish/embedded-broker.js';

const port = Number(process.argv[2]);
const broker = await startEmbeddedBroker({ host: '127.0.0.1', port, logger: pino({ level: 'silent' }) });
if (!broker) throw new Error(`bench broker: port ${port} is already served by another broker`);
process.send?.('ready');
process.once('disconnect', () => void broker.close().then(() => process.exit(0)));
