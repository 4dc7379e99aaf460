import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { RecordedRequest } from './iam.js';

/**
 * Loopback servers speaking the AWS JSON 1.1 protocols the functions use, so the bundled AWS SDK
 * sends its real requests: KMS (GenerateDataKey, Decrypt; data keys wrapped with AES-256-GCM under
 * a master key held here, bound to the encryption context as KMS binds it) and Secrets Manager
 * (GetSecretValue). Every request is recorded with the resource and condition keys IAM would see.
 */

export interface LoopbackAws {
  readonly kmsUrl: string;
  readonly secretsUrl: string;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>));
  });
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1' });
  res.end(JSON.stringify(body));
}

function contextKeys(context: Record<string, string> | undefined): RecordedRequest['context'] {
  const entries = Object.entries(context ?? {});
  return { ...Object.fromEntries(entries.map(([k, v]) => [`kms:EncryptionContext:${k}`, v])), 'kms:EncryptionContextKeys': entries.map(([k]) => k) };
}

function aad(context: Record<string, string> | undefined): Buffer {
  return Buffer.from(JSON.stringify(Object.entries(context ?? {}).sort(([a], [b]) => a.localeCompare(b))));
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

export async function startLoopbackAws(options: {
  readonly record: (request: Omit<RecordedRequest, 'fn'>) => void;
  readonly secrets: Readonly<Record<string, string>>;
}): Promise<LoopbackAws> {
  const master = randomBytes(32);
  const kms = createServer((req, res) => {
    void readBody(req).then((input) => {
      const operation = String(req.headers['x-amz-target'] ?? '').split('.')[1];
      const keyId = String(input.KeyId ?? '');
      const context = input.EncryptionContext as Record<string, string> | undefined;
      options.record({ action: `kms:${operation}`, resource: keyId, context: contextKeys(context) });
      if (operation === 'GenerateDataKey') {
        const plaintext = randomBytes(32);
        const iv = randomBytes(12);
        const cipher = createCipheriv('aes-256-gcm', master, iv).setAAD(aad(context));
        const sealed = Buffer.concat([iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
        return answer(res, 200, { KeyId: keyId, Plaintext: plaintext.toString('base64'), CiphertextBlob: Buffer.concat([Buffer.from(keyId.padEnd(128)), sealed]).toString('base64') });
      }
      if (operation === 'Decrypt') {
        const blob = Buffer.from(String(input.CiphertextBlob), 'base64');
        const owner = blob.subarray(0, 128).toString().trim();
        if (keyId !== '' && owner !== keyId) return answer(res, 400, { __type: 'IncorrectKeyException', message: 'wrong key' });
        const sealed = blob.subarray(128);
        try {
          const decipher = createDecipheriv('aes-256-gcm', master, sealed.subarray(0, 12)).setAAD(aad(context));
          decipher.setAuthTag(sealed.subarray(sealed.length - 16));
          const plaintext = Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
          return answer(res, 200, { KeyId: owner, Plaintext: plaintext.toString('base64'), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' });
        } catch {
          return answer(res, 400, { __type: 'InvalidCiphertextException', message: 'the encryption context does not match' });
        }
      }
      return answer(res, 400, { __type: 'UnsupportedOperationException', message: String(operation) });
    });
  });
  const secrets = createServer((req, res) => {
    void readBody(req).then((input) => {
      const id = String(input.SecretId ?? '');
      options.record({ action: 'secretsmanager:GetSecretValue', resource: id, context: {} });
      const value = options.secrets[id];
      if (value === undefined) return answer(res, 400, { __type: 'ResourceNotFoundException', message: 'no such secret' });
      return answer(res, 200, { ARN: id, Name: id.split(':secret:')[1], SecretString: value, VersionId: 'v1', VersionStages: ['AWSCURRENT'] });
    });
  });
  const [kmsUrl, secretsUrl] = await Promise.all([listen(kms), listen(secrets)]);
  return {
    kmsUrl,
    secretsUrl,
    close: async () => {
      await Promise.all([kms, secrets].map((s) => new Promise<void>((done) => { s.closeAllConnections(); s.close(() => done()); })));
    },
  };
}
