import { Annotations, Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { ERRORS } from '../../shared/core/errors.js';
import { ROUTES, type FunctionName } from '../../shared/http/routes.js';
import {
  accessLogFields,
  DEFAULT_ACCESS_LOG_RETENTION,
  DEFAULT_CLIENT_RATE_LIMIT_PER_5_MINUTES,
  DEFAULT_INTEGRATION_TIMEOUT_SECONDS,
  DEFAULT_BINARY_MEDIA_TYPES,
  DEFAULT_METHOD_THROTTLING,
  DEFAULT_STAGE_NAME,
  DEFAULT_STAGE_THROTTLING,
  WAF_MAX_REQUEST_BODY_BYTES,
} from './launch-api-defaults.js';

export interface Throttle {
  readonly rateLimit: number;
  readonly burstLimit: number;
}

export interface CustomDomainOptions {
  /** Host name of the config's `publicUrl` (e.g. `smart.acme.example`). */
  readonly domainName: string;
  /** A regional ACM certificate (same region as the stack) covering `domainName`. */
  readonly certificateArn: string;
}

export interface IntegrationTuning {
  /** API Gateway's integration timeout (50 ms to 29 s; more only after a quota increase). */
  readonly timeout?: Duration;
  /**
   * `STREAM` invokes the function with response streaming (no 6 MB / 29 s buffering limits); its
   * handler must be a streaming one (`awslambda.streamifyResponse`). Default: `RESPONSE_TRANSFER_MODE`.
   */
  readonly responseTransferMode?: apigw.ResponseTransferMode;
}

/**
 * How each route group's answers travel. The FHIR proxy streams (`functions/fhir-proxy/handler.ts`
 * exports a streaming `handler`): FHIR answers (Binary, large searches) exceed the 6 MB of a buffered
 * Lambda response, and streaming passes binary bytes as they are. Its integration URI becomes
 * `…/2021-11-15/functions/{arn}/response-streaming-invocations`; the invoke permission stays
 * `lambda:InvokeFunction`, which also covers InvokeWithResponseStream. A team that sets
 * `BUFFERED` for `fhir-proxy` must point the function at `bufferedHandler`.
 */
export const RESPONSE_TRANSFER_MODE: Readonly<Record<FunctionName, apigw.ResponseTransferMode>> = {
  launch: apigw.ResponseTransferMode.BUFFERED,
  sessions: apigw.ResponseTransferMode.BUFFERED,
  'fhir-proxy': apigw.ResponseTransferMode.STREAM,
  jwks: apigw.ResponseTransferMode.BUFFERED,
};

export interface LaunchApiProps {
  readonly customer: string;
  /** The function behind each `FunctionName` of `ROUTES`. */
  readonly functions: Readonly<Record<FunctionName, lambda.IFunction>>;
  readonly logsKey: kms.IKey;
  /** Base path of the config's `publicUrl` (`/ehr` in `https://host/ehr`), mapped on the custom domain. */
  readonly basePath?: string;
  readonly stageName?: string;
  readonly stageThrottling?: Throttle;
  /** Per-method throttling keyed `/{resource path}/{METHOD}`; merged over the defaults. */
  readonly methodThrottling?: Readonly<Record<string, Throttle>>;
  readonly accessLogRetention?: logs.RetentionDays;
  /** Log the client IP in the access log (default true; see `accessLogFields`). */
  readonly accessLogSourceIp?: boolean;
  /**
   * An existing WAFv2 web ACL (scope REGIONAL) to associate with the stage instead of the stack's
   * own (a stage takes one web ACL): it must then carry the per-client rate rule itself.
   */
  readonly webAclArn?: string;
  /**
   * The per-client (source IP) rate-based rule of the stack's own web ACL, in requests per 5
   * minutes (default `DEFAULT_CLIENT_RATE_LIMIT_PER_5_MINUTES`); `false` creates no web ACL.
   */
  readonly clientRateLimit?: number | false;
  /**
   * The app's origin when it is not the API's own: API Gateway's own errors (throttling, timeouts,
   * payload limits, unknown routes, WAF blocks) carry the same CORS headers as the functions'.
   */
  readonly appOrigin?: string;
  readonly customDomain?: CustomDomainOptions;
  /** Serve only through the custom domain (default: false, the execute-api URL stays on). */
  readonly disableExecuteApiEndpoint?: boolean;
  /**
   * Create the account-wide API Gateway → CloudWatch Logs role (AWS::ApiGateway::Account). Access
   * logging needs it once per account and region; it is a singleton, so only one stack (or the
   * account baseline) should own it. Default: false.
   */
  readonly createCloudWatchRole?: boolean;
  /**
   * The account already has the API Gateway → CloudWatch Logs role (`aws apigateway get-account
   * --query cloudwatchRoleArn` prints an ARN). One of this and `createCloudWatchRole` must be true:
   * the stage writes access logs, and without the role the first deploy fails. Default: false.
   */
  readonly cloudWatchRoleExists?: boolean;
  readonly integrations?: Partial<Readonly<Record<FunctionName, IntegrationTuning>>>;
}

/**
 * The REST API (payload v1) of docs/design.md §2: exactly the routes of `ROUTES`, each a Lambda proxy
 * integration, with stage and per-method throttling, JSON access logs without ids or query strings,
 * and no execution logging.
 */
export class LaunchApi extends Construct {
  readonly api: apigw.RestApi;
  readonly stage: apigw.Stage;
  readonly accessLogs: logs.LogGroup;
  readonly methods: readonly apigw.Method[];
  readonly domain: apigw.DomainName | undefined;
  readonly webAclAssociation: wafv2.CfnWebACLAssociation | undefined;
  /** The stack's own web ACL (per-client rate rule, request size guard), unless `webAclArn` or `clientRateLimit: false`. */
  readonly webAcl: wafv2.CfnWebACL | undefined;
  /** API Gateway's integration timeout of each route group, in seconds. */
  readonly integrationTimeoutSeconds: Readonly<Record<FunctionName, number>>;

  constructor(scope: Construct, id: string, props: LaunchApiProps) {
    super(scope, id);
    const stageThrottle = props.stageThrottling ?? DEFAULT_STAGE_THROTTLING;
    const methodThrottle = { ...DEFAULT_METHOD_THROTTLING, ...props.methodThrottling };

    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      retention: props.accessLogRetention ?? DEFAULT_ACCESS_LOG_RETENTION,
      encryptionKey: props.logsKey,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.api = new apigw.RestApi(this, 'Api', {
      restApiName: `smart-launch-${props.customer}`,
      description: `smart-launch SMART on FHIR token handler for ${props.customer}`,
      endpointConfiguration: { types: [apigw.EndpointType.REGIONAL] },
      binaryMediaTypes: DEFAULT_BINARY_MEDIA_TYPES,
      disableExecuteApiEndpoint: props.disableExecuteApiEndpoint ?? false,
      cloudWatchRole: props.createCloudWatchRole ?? false,
      ...(props.createCloudWatchRole ? { cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN } : {}),
      failOnWarnings: true,
      deployOptions: {
        stageName: props.stageName ?? DEFAULT_STAGE_NAME,
        throttlingRateLimit: stageThrottle.rateLimit,
        throttlingBurstLimit: stageThrottle.burstLimit,
        // Execution logs would record query strings (code, state), paths (session ids) and, with
        // data tracing, whole bodies: off. Access logs and the functions' own logs cover operations.
        loggingLevel: apigw.MethodLoggingLevel.OFF,
        dataTraceEnabled: false,
        metricsEnabled: false,
        tracingEnabled: false,
        accessLogDestination: new apigw.LogGroupLogDestination(this.accessLogs),
        accessLogFormat: apigw.AccessLogFormat.custom(JSON.stringify(accessLogFields(props.accessLogSourceIp ?? true))),
        methodOptions: Object.fromEntries(
          Object.entries(methodThrottle).map(([key, t]) => [key, { throttlingRateLimit: t.rateLimit, throttlingBurstLimit: t.burstLimit }]),
        ),
      },
    });
    this.stage = this.api.deploymentStage;
    if (!props.createCloudWatchRole && !props.cloudWatchRoleExists) {
      // A warning, not an error: the construct cannot see the account, and a team that knows the role
      // exists acknowledges it with the prop. `cdk synth --strict` (and `cdk deploy`) show it before
      // CloudFormation would fail the create and leave a stack (termination protection) to clean up.
      Annotations.of(this).addWarningV2(
        '@smart-launch/infra:apiGatewayCloudWatchRole',
        'the stage writes access logs, which needs the account\'s API Gateway CloudWatch Logs role (one per account and region; ' +
          'without it the first deploy fails and leaves a stack to clean up). Check with `aws apigateway get-account --query ' +
          'cloudwatchRoleArn`: if it prints an ARN, set `api: { cloudWatchRoleExists: true }`; if it prints null, set ' +
          '`api: { createCloudWatchRole: true }` in exactly one stack of that account and region',
      );
    }

    const integrations = new Map<FunctionName, apigw.LambdaIntegration>();
    const timeouts = {} as Record<FunctionName, number>;
    for (const route of ROUTES) {
      timeouts[route.fn] = props.integrations?.[route.fn]?.timeout?.toSeconds() ?? DEFAULT_INTEGRATION_TIMEOUT_SECONDS;
    }
    this.integrationTimeoutSeconds = timeouts;
    const integrationFor = (fn: FunctionName): apigw.LambdaIntegration => {
      let integration = integrations.get(fn);
      if (!integration) {
        const tuning = props.integrations?.[fn] ?? {};
        integration = new apigw.LambdaIntegration(props.functions[fn], {
          proxy: true,
          // Each method gets its own invoke permission scoped to its ARN; no console test-invoke.
          allowTestInvoke: false,
          // Always explicit (`TimeoutInMillis`), so the template says what the functions plan for.
          timeout: tuning.timeout ?? Duration.seconds(DEFAULT_INTEGRATION_TIMEOUT_SECONDS),
          // BUFFERED is API Gateway's default: only set what differs, or what was asked for.
          ...(tuning.responseTransferMode !== undefined || RESPONSE_TRANSFER_MODE[fn] !== apigw.ResponseTransferMode.BUFFERED
            ? { responseTransferMode: tuning.responseTransferMode ?? RESPONSE_TRANSFER_MODE[fn] }
            : {}),
        });
        integrations.set(fn, integration);
      }
      return integration;
    };

    this.methods = ROUTES.map((route) =>
      this.api.root.resourceForPath(route.resource).addMethod(route.method, integrationFor(route.fn), {
        // Public by design: launch and callback are browser navigations from the EHR, and every
        // /sessions route is authorized inside the function (session id + HttpOnly binding cookie).
        authorizationType: apigw.AuthorizationType.NONE,
        operationName: `${route.fn}:${route.method} ${route.resource}`,
      }),
    );

    // API Gateway's own answers (an unknown route, throttling, its timeout, payload limits, a WAF
    // block) never reach a function: they get the JSON error shape and, for an app on another
    // origin, the same CORS headers the functions send, so the app can read them.
    const gatewayHeaders: Record<string, string> = {
      'Cache-Control': "'no-store'",
      'X-Content-Type-Options': "'nosniff'",
      ...gatewayCorsHeaders(props.appOrigin),
    };
    const gatewayError = JSON.stringify({
      error: { code: '$context.error.responseType', message: '__MESSAGE__', correlationId: '$context.requestId' },
    }).replace('"__MESSAGE__"', '$context.error.messageString');
    this.api.addGatewayResponse('Default4xx', { type: apigw.ResponseType.DEFAULT_4XX, responseHeaders: gatewayHeaders, templates: { 'application/json': gatewayError } });
    this.api.addGatewayResponse('Default5xx', { type: apigw.ResponseType.DEFAULT_5XX, responseHeaders: gatewayHeaders, templates: { 'application/json': gatewayError } });
    this.api.addGatewayResponse('Throttled', {
      type: apigw.ResponseType.THROTTLED,
      statusCode: '429',
      responseHeaders: { ...gatewayHeaders, 'Retry-After': "'1'" },
      templates: { 'application/json': gatewayError },
    });
    // API Gateway answers an unknown route (or method) with 403 "Missing Authentication Token";
    // say what it is, with the stable code the functions use for the same case.
    this.api.addGatewayResponse('RouteNotFound', {
      type: apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
      statusCode: String(ERRORS.ROUTE_NOT_FOUND.status),
      responseHeaders: gatewayHeaders,
      templates: {
        'application/json': JSON.stringify({
          error: { code: 'ROUTE_NOT_FOUND', message: 'no such route', hint: ERRORS.ROUTE_NOT_FOUND.hint, correlationId: '$context.requestId' },
        }),
      },
    });

    if (props.customDomain) {
      this.domain = this.api.addDomainName('Domain', {
        domainName: props.customDomain.domainName,
        certificate: acm.Certificate.fromCertificateArn(this, 'Certificate', props.customDomain.certificateArn),
        endpointType: apigw.EndpointType.REGIONAL,
        securityPolicy: apigw.SecurityPolicy.TLS_1_2,
        ...(props.basePath ? { basePath: props.basePath } : {}),
      });
    } else {
      this.domain = undefined;
    }

    const rateLimit = props.clientRateLimit ?? DEFAULT_CLIENT_RATE_LIMIT_PER_5_MINUTES;
    this.webAcl =
      props.webAclArn === undefined && rateLimit !== false
        ? new wafv2.CfnWebACL(this, 'ClientRateLimit', {
            scope: 'REGIONAL',
            description: `smart-launch ${props.customer}: per-client rate limit and request size guard`,
            defaultAction: { allow: {} },
            visibilityConfig: { cloudWatchMetricsEnabled: true, sampledRequestsEnabled: false, metricName: `smart-launch-${props.customer}` },
            customResponseBodies: {
              tooMany: { contentType: 'APPLICATION_JSON', content: wafError('THROTTLED', 'too many requests from this client; slow down and retry') },
              tooLarge: { contentType: 'APPLICATION_JSON', content: wafError('REQUEST_TOO_LARGE', ERRORS.REQUEST_TOO_LARGE.hint) },
            },
            rules: [
              {
                name: 'request-body-size',
                priority: 0,
                statement: {
                  regexMatchStatement: {
                    regexString: contentLengthAtLeast(WAF_MAX_REQUEST_BODY_BYTES),
                    fieldToMatch: { singleHeader: { Name: 'content-length' } },
                    textTransformations: [{ priority: 0, type: 'NONE' }],
                  },
                },
                action: { block: { customResponse: { responseCode: 413, customResponseBodyKey: 'tooLarge', responseHeaders: wafCorsHeaders(props.appOrigin) } } },
                visibilityConfig: { cloudWatchMetricsEnabled: true, sampledRequestsEnabled: false, metricName: 'request-body-size' },
              },
              {
                name: 'per-client-rate',
                priority: 1,
                statement: { rateBasedStatement: { limit: rateLimit, evaluationWindowSec: 300, aggregateKeyType: 'IP' } },
                action: {
                  block: {
                    customResponse: {
                      responseCode: 429,
                      customResponseBodyKey: 'tooMany',
                      responseHeaders: [{ name: 'Retry-After', value: '60' }, ...wafCorsHeaders(props.appOrigin)],
                    },
                  },
                },
                visibilityConfig: { cloudWatchMetricsEnabled: true, sampledRequestsEnabled: false, metricName: 'per-client-rate' },
              },
            ],
          })
        : undefined;
    const webAclArn = props.webAclArn ?? this.webAcl?.attrArn;
    this.webAclAssociation = webAclArn
      ? new wafv2.CfnWebACLAssociation(this, 'WebAcl', { resourceArn: this.stage.stageArn, webAclArn })
      : undefined;
  }
}

/** CORS headers of API Gateway's own responses (values quoted, as gateway responses want them). */
function gatewayCorsHeaders(appOrigin: string | undefined): Record<string, string> {
  return appOrigin
    ? { 'Access-Control-Allow-Origin': `'${appOrigin}'`, 'Access-Control-Allow-Credentials': "'true'", Vary: "'Origin'" }
    : {};
}

function wafCorsHeaders(appOrigin: string | undefined): { name: string; value: string }[] {
  return appOrigin
    ? [
        { name: 'Access-Control-Allow-Origin', value: appOrigin },
        { name: 'Access-Control-Allow-Credentials', value: 'true' },
        { name: 'Vary', value: 'Origin' },
      ]
    : [];
}

function wafError(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

/**
 * A regular expression matching a decimal Content-Length of at least `bytes` (no leading zeros, as
 * HTTP clients send it): same number of digits and not smaller, or more digits.
 */
export function contentLengthAtLeast(bytes: number): string {
  const digits = String(bytes);
  const alternatives: string[] = [];
  for (let i = 0; i < digits.length; i += 1) {
    const d = Number(digits[i]);
    const rest = digits.length - i - 1;
    if (d < 9) alternatives.push(`${digits.slice(0, i)}[${d + 1}-9]${rest > 0 ? `\\d{${rest}}` : ''}`);
  }
  alternatives.push(digits);
  alternatives.push(`[1-9]\\d{${digits.length},}`);
  return `^(${alternatives.join('|')})$`;
}
