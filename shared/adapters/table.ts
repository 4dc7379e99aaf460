/**
 * The one table definition, used by the CDK construct and by the local store bootstrap so the two
 * cannot drift apart. A single partition key; record kinds are told apart by the key prefix.
 */
export const TABLE = {
  partitionKey: 'pk',
  /** Epoch seconds; DynamoDB TTL deletes lazily, so reads check it too. */
  ttlAttribute: 'ttl',
} as const;
