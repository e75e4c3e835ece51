// The main flow of credit-grants from Node, with stubs built from protos/ at run time
// (@grpc/proto-loader): a metered feature, a credit currency, a custom plan with a negotiated
// monthly amount, a customer on a test clock, a subscription, its handoff to the grant service,
// the balance, a usage, a renewal, and the ledger.
//
//   make run                                  # in the repository, in one terminal
//   cd examples/node && npm install && node main_flow.js
//
// Settings (the same variables as the Python client, docs/client.md):
//   CREDIT_GRANTS_CATALOG_ADDRESS / CREDIT_GRANTS_GRANT_ADDRESS  (127.0.0.1:50051 / 127.0.0.1:50052)
//   CREDIT_GRANTS_CATALOG_API_KEY / CREDIT_GRANTS_GRANT_API_KEY  (default: ../../data/*-admin.key of make run)
//   CREDIT_GRANTS_CATALOG_TLS_CA / CREDIT_GRANTS_GRANT_TLS_CA    (PEM of the CA: TLS; default plaintext)
// Every call has a 10 s deadline. It can run again on the same databases: the catalog's part is
// made once (a request_id returns its first answer), the customer is new each run.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.resolve(__dirname, '..', '..');
const DEADLINE_MS = 10000;

function setting(service, name, fallback) {
  const value = process.env[`CREDIT_GRANTS_${service.toUpperCase()}_${name}`];
  return value && value.trim() ? value.trim() : fallback;
}

function apiKey(service) {
  const key = setting(service, 'API_KEY', null);
  if (key) return key;
  const file = path.join(ROOT, 'data', `${service}-admin.key`);
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : null;
}

function client(Service, service, defaultAddress) {
  const ca = setting(service, 'TLS_CA', null);
  const credentials = ca ? grpc.credentials.createSsl(fs.readFileSync(ca)) : grpc.credentials.createInsecure();
  const stub = new Service(setting(service, 'ADDRESS', defaultAddress), credentials);
  const key = apiKey(service);
  // One promise per call: the API key as metadata, a deadline, the gRPC error as a rejection.
  return (method, request) =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      if (key) metadata.set('authorization', `Bearer ${key}`);
      stub[method](request, metadata, { deadline: Date.now() + DEADLINE_MS }, (error, response) => {
        if (error) {
          error.message = `${method}: ${grpc.status[error.code]}: ${error.details}`;
          reject(error);
        } else {
          resolve(response);
        }
      });
    });
}

const at = (iso) => ({ seconds: String(Math.floor(Date.parse(iso) / 1000)), nanos: 0 });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const definition = protoLoader.loadSync(
    ['catalog_service/v1/catalog_service.proto', 'grant_service/v1/grant_service.proto'],
    { includeDirs: [path.join(ROOT, 'protos')], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  const api = grpc.loadPackageDefinition(definition);
  const catalog = client(api.catalog_service.v1.CatalogService, 'catalog', '127.0.0.1:50051');
  const grant = client(api.grant_service.v1.GrantService, 'grant', '127.0.0.1:50052');

  await catalog('CreateFeature', {
    request_id: 'node-example-1',
    feature: { key: 'node-calls', display_name: 'Node calls', type: 'FEATURE_TYPE_METERED', unit_name: 'call' },
  });
  await catalog('CreateCreditCurrency', {
    request_id: 'node-example-2',
    credit_currency: {
      key: 'node-credits', display_name: 'Node credits', unit_name: 'credit',
      rates: [{ feature_key: 'node-calls', credits_per_unit: '2' }],
    },
  });
  await catalog('CreatePlan', {
    request_id: 'node-example-3',
    plan: {
      key: 'node-plan', display_name: 'Node plan', custom: true,
      credit_entitlements: [{
        key: 'monthly', currency_key: 'node-credits', cadence: 'CADENCE_MONTHLY',
        variable_amount: { min: '100', max: '100000' },
      }],
    },
  });
  await catalog('PublishPlan', { request_id: 'node-example-4', key: 'node-plan' });

  const { test_clock: clock } = await grant('CreateTestClock', { name: 'node example', frozen_time: at('2026-01-31T00:00:00Z') });
  const customer = `node-${Date.now()}`;
  await catalog('CreateCustomer', { customer: { key: customer, display_name: 'Node customer', test_clock_id: clock.test_clock_id } });
  const { subscription } = await catalog('ProvisionSubscription', {
    request_id: `${customer}-provision`, customer_key: customer, plan_key: 'node-plan', entitlement_values: { monthly: '1000' },
  });

  // The catalog hands the subscription to the grant service within moments.
  for (let tries = 0; ; tries++) {
    const { subscription: s } = await catalog('GetSubscription', { subscription_id: subscription.subscription_id });
    if (s.handoff.status === 'HANDOFF_STATUS_DELIVERED') break;
    if (tries > 300) throw new Error(`handoff not delivered: ${JSON.stringify(s.handoff)}`);
    await sleep(100);
  }

  const balance = async () =>
    (await grant('GetBalance', { customer_key: customer, currency_key: 'node-credits' })).balance.available;
  const before = await balance();
  const { usage } = await grant('ReportUsage', {
    request_id: `${customer}-usage-1`, customer_key: customer, feature_key: 'node-calls', quantity: '10',
  });
  await grant('AdvanceTestClock', { test_clock_id: clock.test_clock_id, frozen_time: at('2026-02-28T00:00:00Z') });
  const { entries } = await grant('ListLedgerEntries', { customer_key: customer, currency_key: 'node-credits' });

  console.log(JSON.stringify({
    customer,
    subscription_id: subscription.subscription_id,
    balance_before_usage: before,
    usage_credits: usage.credits,
    balance_after_usage: usage.balance_after,
    balance_after_renewal: await balance(),
    ledger: entries.map((e) => [e.type.replace('LEDGER_ENTRY_TYPE_', ''), e.amount]),
  }, null, 2));
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  if (error.code === grpc.status.UNAVAILABLE) console.error('are both services running? start them with `make run`');
  process.exit(1);
});
