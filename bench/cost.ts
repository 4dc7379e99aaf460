/**
 * The cost model of `npm run bench`: dollars per 1,000 sign-ins and per 1M proxied requests, from the
 * CPU per request and the AWS calls the bench measured, at the memory sizes the stack deploys
 * (infra/constructs/smart-function-defaults.ts).
 *
 * PRICES: AWS public list prices for us-east-1 as known on 2025-06-01. They change: re-check them
 * (aws.amazon.com/lambda/pricing, /api-gateway/pricing, /dynamodb/pricing/on-demand, /kms/pricing,
 * /cloudwatch/pricing, /fargate/pricing) before quoting any figure.
 */
export const PRICES = {
  asOf: '2025-06-01 (us-east-1 list prices; re-check before use)',
  lambdaArmGbSecond: 0.0000133334,
  lambdaPerMillionRequests: 0.2,
  restApiPerMillionRequests: 3.5,
  dynamoReadPerMillionUnits: 0.125,
  dynamoWritePerMillionUnits: 0.625,
  kmsPerTenThousandRequests: 0.03,
  logsIngestionPerGb: 0.5,
  fargateArmVcpuHour: 0.03238,
  fargateArmGbHour: 0.00356,
} as const;

/** Memory of each function as deployed (MB); Lambda gives a full vCPU at 1,769 MB, proportionally less below. */
export const MEMORY_MB = { launch: 512, sessions: 256, 'fhir-proxy': 1024 } as const;
const FULL_VCPU_MB = 1769;

/**
 * What the bench cannot measure locally, stated: round trips to the real services from Lambda. The
 * function waits (and is billed) for each; they add duration, not CPU.
 */
export const ASSUMED_WAITS_MS = { ehrCall: 100, dynamoCall: 5, kmsCall: 10, logsPut: 15 } as const;
/** Item sizes behind the request units: a session item under 4 KB (one read unit), written as 3 units (< 3 KB). */
export const ASSUMED_UNITS = { sessionRead: 1, sessionWrite: 3, otherWrite: 1 } as const;

export interface CostInputs {
  /**
   * The proxy's own CPU per request (ms, on this machine), averaged over read and search: the product
   * as shipped, its session cache on (`session.proxyCacheSeconds` 5 s), so about no store read per request.
   */
  readonly proxyCpuMs: number;
  /** CPU per sign-in (ms), an upper bound (includes the sandbox EHR). */
  readonly signInCpuMs: number;
  /** AWS calls per sign-in and per proxied request. */
  readonly signInCalls: Readonly<Record<string, number>>;
  readonly proxiedCalls: Readonly<Record<string, number>>;
  /** EHR calls the product makes per sign-in (token, discovery and JWKS when not cached). */
  readonly signInEhrCalls: number;
  /** Log bytes (operational + audit) per proxied request. */
  readonly logBytesPerRequest: number;
  /**
   * The same proxied traffic with the session cache off (`proxyCacheSeconds: 0`): its own CPU and AWS
   * calls per request (one `GetItem` each). The worst case of the shipped product too: every request
   * the first of its session in its container, or more than the window after the last.
   */
  readonly cacheOff?: { readonly proxyCpuMs: number; readonly proxiedCalls: Readonly<Record<string, number>> } | undefined;
}

function lambdaSeconds(cpuMs: number, memoryMb: number, waitMs: number): number {
  // CPU time stretches by the share of a vCPU the memory size buys; waits are billed as they are.
  return (cpuMs * Math.max(1, FULL_VCPU_MB / memoryMb) + waitMs) / 1000;
}

const round = (v: number, digits = 4) => Math.round(v * 10 ** digits) / 10 ** digits;

export function costModel(inputs: CostInputs) {
  const p = PRICES;
  const w = ASSUMED_WAITS_MS;
  const dynamoCalls = (c: Readonly<Record<string, number>>) => (c.GetItem ?? 0) + (c.PutItem ?? 0) + (c.DeleteItem ?? 0) + (c.UpdateItem ?? 0);
  const kmsCalls = (c: Readonly<Record<string, number>>) => (c.GenerateDataKey ?? 0) + (c.Decrypt ?? 0);

  // Per 1M proxied requests: one API request, one proxy invocation, one EHR call, the store reads made, one audit PutLogEvents.
  const perMillion = (cpuMs: number, calls: Readonly<Record<string, number>>) => {
    const proxySeconds = lambdaSeconds(cpuMs, MEMORY_MB['fhir-proxy'], w.ehrCall + dynamoCalls(calls) * w.dynamoCall + w.logsPut);
    return {
      apiGateway: p.restApiPerMillionRequests,
      lambdaRequests: p.lambdaPerMillionRequests,
      lambdaDuration: proxySeconds * (MEMORY_MB['fhir-proxy'] / 1024) * p.lambdaArmGbSecond * 1e6,
      dynamo: (calls.GetItem ?? 0) * ASSUMED_UNITS.sessionRead * p.dynamoReadPerMillionUnits,
      kms: kmsCalls(calls) * p.kmsPerTenThousandRequests * 100,
      logs: (inputs.logBytesPerRequest * 1e6 / 1024 ** 3) * p.logsIngestionPerGb,
    };
  };
  const proxied = perMillion(inputs.proxyCpuMs, inputs.proxiedCalls);
  const proxiedCacheOff = inputs.cacheOff === undefined ? undefined : perMillion(inputs.cacheOff.proxyCpuMs, inputs.cacheOff.proxiedCalls);

  // Per 1,000 sign-ins: /launch and /callback (launch function), GET /sessions/{id} (sessions function).
  const signInWaitMs = inputs.signInEhrCalls * w.ehrCall + dynamoCalls(inputs.signInCalls) * w.dynamoCall + kmsCalls(inputs.signInCalls) * w.kmsCall + 2 * w.logsPut;
  const signInSeconds = lambdaSeconds(inputs.signInCpuMs, MEMORY_MB.launch, signInWaitMs);
  const writes = (inputs.signInCalls.PutItem ?? 0) + (inputs.signInCalls.DeleteItem ?? 0) + (inputs.signInCalls.UpdateItem ?? 0);
  const signIn = {
    apiGateway: (3 * p.restApiPerMillionRequests) / 1000,
    lambdaRequests: (3 * p.lambdaPerMillionRequests) / 1000,
    lambdaDuration: signInSeconds * (MEMORY_MB.launch / 1024) * p.lambdaArmGbSecond * 1000,
    dynamo: ((inputs.signInCalls.GetItem ?? 0) * p.dynamoReadPerMillionUnits + writes * ASSUMED_UNITS.sessionWrite * p.dynamoWritePerMillionUnits) / 1000,
    kms: (kmsCalls(inputs.signInCalls) * p.kmsPerTenThousandRequests) / 10,
  };

  // The reference: one always-on Fargate task (arm64, 1 vCPU, 2 GB) run at 60% CPU, proxying the same requests.
  const taskMonth = (p.fargateArmVcpuHour + 2 * p.fargateArmGbHour) * 730;
  const requestsPerMonth = (0.6 * 730 * 3600 * 1000) / inputs.proxyCpuMs;
  const sum = (o: Readonly<Record<string, number>>) => Object.values(o).reduce((a, b) => a + b, 0);
  const rounded = <T extends Record<string, number>>(o: T) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, round(v)])) as T;
  return {
    prices: p,
    assumptions: { waitsMs: w, units: ASSUMED_UNITS, memoryMb: MEMORY_MB, inputs },
    perMillionProxied: { ...rounded(proxied), total: round(sum(proxied)), basis: 'as shipped: the proxy session cache on (session.proxyCacheSeconds 5 s)' },
    ...(proxiedCacheOff === undefined
      ? {}
      : { perMillionProxiedCacheOff: { ...rounded(proxiedCacheOff), total: round(sum(proxiedCacheOff)), basis: 'session cache off (proxyCacheSeconds 0): one store read per request, the worst case' } }),
    perThousandSignIns: { ...rounded(signIn), total: round(sum(signIn)) },
    container: {
      task: '1 vCPU / 2 GB arm64 Fargate, always on',
      perMonth: round(taskMonth, 2),
      proxiedRequestsPerMonthAt60PercentCpu: Math.round(requestsPerMonth),
      perMillionProxiedAtThatLoad: round((taskMonth / requestsPerMonth) * 1e6),
      note: 'plus a load balancer (about $16/month + LCUs) and the same DynamoDB/KMS calls; a fixed cost whether used or not',
    },
  };
}

export type CostModel = ReturnType<typeof costModel>;

/** The README table (markdown). */
export function costTable(model: CostModel): string {
  const m = model.perMillionProxied;
  const off = 'perMillionProxiedCacheOff' in model ? model.perMillionProxiedCacheOff : undefined;
  const s = model.perThousandSignIns;
  const c = model.container;
  const $ = (v: number) => `$${v.toFixed(v < 0.1 ? 4 : 2)}`;
  return [
    `| | API Gateway REST | Lambda requests | Lambda duration (arm64) | DynamoDB on-demand | KMS | total |`,
    `|---|---|---|---|---|---|---|`,
    // The total includes the logs' ingestion (CloudWatch), which has no column of its own.
    `| 1M proxied requests (fhir-proxy ${MEMORY_MB['fhir-proxy']} MB), as shipped: session cache on | ${$(m.apiGateway)} | ${$(m.lambdaRequests)} | ${$(m.lambdaDuration)} | ${$(m.dynamo)} | ${$(m.kms)} | **${$(m.total)}** (incl. ${$(m.logs)} logs) |`,
    ...(off === undefined
      ? []
      : [
          `| 1M proxied requests, session cache off (\`proxyCacheSeconds: 0\`; the worst case: every request a store read) | ${$(off.apiGateway)} | ${$(off.lambdaRequests)} | ${$(off.lambdaDuration)} | ${$(off.dynamo)} | ${$(off.kms)} | **${$(off.total)}** (incl. ${$(off.logs)} logs) |`,
        ]),
    `| 1,000 sign-ins (launch ${MEMORY_MB.launch} MB, sessions ${MEMORY_MB.sessions} MB) | ${$(s.apiGateway)} | ${$(s.lambdaRequests)} | ${$(s.lambdaDuration)} | ${$(s.dynamo)} | ${$(s.kms)} | **${$(s.total)}** |`,
    `| reference: ${c.task} | | | | | | ${$(c.perMonth)}/month, ${(c.proxiedRequestsPerMonthAt60PercentCpu / 1e6).toFixed(0)}M proxied requests/month at 60% CPU = ${$(c.perMillionProxiedAtThatLoad)} per 1M at that load |`,
  ].join('\n');
}
