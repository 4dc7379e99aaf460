import { CfnOutput, Stack, Tags, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import type { Config } from '../../shared/config/schema.js';
import { SmartLaunch, type SmartLaunchProps } from '../constructs/smart-launch.js';
import { acknowledgeFindings } from '../nag.js';

export interface SmartLaunchStackProps extends StackProps {
  /** The customer config, validated for AWS. */
  readonly config: Config;
  /** Everything of `SmartLaunchProps` but the config (custom domain, WAF, alarm email, sizing...). */
  readonly smartLaunch?: Omit<SmartLaunchProps, 'config'>;
}

/** `SmartLaunch-<customer>`: CloudFormation stack names allow letters, digits and hyphens. */
export function stackNameFor(customer: string): string {
  return `SmartLaunch-${customer}`;
}

/** One customer's stack: the `SmartLaunch` construct, its cdk-nag acknowledgments and its outputs. */
export class SmartLaunchStack extends Stack {
  readonly smartLaunch: SmartLaunch;

  constructor(scope: Construct, id: string, props: SmartLaunchStackProps) {
    super(scope, id, {
      description: `smart-launch SMART on FHIR token handler for ${props.config.customer}`,
      ...props,
    });
    Tags.of(this).add('smart-launch:customer', props.config.customer);

    this.smartLaunch = new SmartLaunch(this, 'SmartLaunch', { ...props.smartLaunch, config: props.config });
    acknowledgeFindings(this.smartLaunch);

    new CfnOutput(this, 'LaunchUrl', { value: this.smartLaunch.launchUrl, description: 'Register at the EHR as the app launch URL' });
    new CfnOutput(this, 'RedirectUri', { value: this.smartLaunch.redirectUri, description: 'Register at the EHR as the redirect URI' });
    new CfnOutput(this, 'JwksUrl', { value: this.smartLaunch.jwksUrl, description: 'Public keys of this client (private_key_jwt)' });
    new CfnOutput(this, 'ApiUrl', { value: this.smartLaunch.apiUrl, description: 'The API stage itself (execute-api)' });
    const domain = this.smartLaunch.api.domain;
    const domainName = props.smartLaunch?.api?.customDomain?.domainName;
    if (domain && domainName) {
      new CfnOutput(this, 'CustomDomainTarget', {
        value: domain.domainNameAliasDomainName,
        // CloudFormation takes only a literal string here (no Ref, no Fn::Join): the name from the
        // stack options, never the domain resource's token.
        description: `DNS: point ${domainName} (CNAME or alias) at this regional API Gateway domain`,
      });
    }
    new CfnOutput(this, 'AlarmTopicArn', { value: this.smartLaunch.monitoring.topic.topicArn, description: 'Subscribe on-call here' });
  }
}
