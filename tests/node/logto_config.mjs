// The config a Logto admin saves for one of Logto's real SMS connector packages, validated by that package's
// own config guard, printed as one JSON object on stdout (tests/logto_connectors.rs pastes it into a
// gateway.yaml as is).
//
//   node tests/node/logto_config.mjs <aliyun|twilio|tencent> [--overseas] [--parsed]
//
// The config is built from the package's metadata, as Logto's admin console builds its form: a form item's
// `defaultValue` (the templates list, the switches) is kept, and a placeholder (`<access-key-id>`,
// `<template-code>`) is replaced by a realistic test value, as the admin would fill it in. `--overseas`
// (aliyun) writes every template in Logto's `{china, overseas}` templateCode form. `--parsed` prints what
// the guard returns (what the connector itself works with: zod's defaults filled in, such as Aliyun's
// template `type: 2`) instead of the config as saved. A config the guard refuses exits 1 with the guard's
// message on stderr.
//
// The guard is the connector's `configGuard`, the one Logto's core runs (`validateConfig`, a `safeParse`)
// when the admin saves and before every send; `sendMessage` is never called, nothing is sent.

const PACKAGES = {
  aliyun: '@logto/connector-aliyun-sms',
  twilio: '@logto/connector-twilio-sms',
  tencent: '@logto/connector-tencent-sms',
};

// What an admin types into the text fields (keys as the packages' form items name them).
const HEX32 = '0123456789abcdef0123456789abcdef';
const VALUES = {
  aliyun: {
    accessKeyId: 'LTAI5tTestKeyId',
    accessKeySecret: 'test-secret',
    signName: '阿里云短信测试',
  },
  twilio: {
    accountSID: `AC${HEX32}`,
    authToken: 'test-auth-token',
    fromMessagingServiceSID: `MG${HEX32}`,
  },
  tencent: {
    accessKeyId: 'AKIDTestSecretId',
    accessKeySecret: 'test-secret',
    signName: '腾讯云',
    sdkAppId: '1400006666',
    region: 'ap-guangzhou',
  },
};

// Template codes as each console issues them: Aliyun's SMS_<digits>, Tencent's numeric TemplateId.
const templateCode = (provider, index) =>
  provider === 'aliyun' ? `SMS_${154950909 + index}` : String(1110 + index);
const overseasCode = (index) => `SMS_${465320000 + index}`;

const isPlaceholder = (value) => typeof value === 'string' && /^<[^<>]+>$/.test(value);

const fail = (message) => {
  process.stderr.write(`logto_config.mjs: ${message}\n`);
  process.exit(1);
};

const args = process.argv.slice(2);
const provider = args.find((a) => !a.startsWith('--'));
const flags = new Set(args.filter((a) => a.startsWith('--')));
const known = new Set(['--overseas', '--parsed']);
if (!PACKAGES[provider] || [...flags].some((f) => !known.has(f))) {
  fail(`usage: logto_config.mjs <${Object.keys(PACKAGES).join('|')}> [--overseas] [--parsed]`);
}
if (flags.has('--overseas') && provider !== 'aliyun') {
  fail('--overseas is the Aliyun connector\'s {china, overseas} templateCode form');
}

const { default: createConnector } = await import(PACKAGES[provider]);
let config;
const connector = await createConnector({ getConfig: async () => config });
const { metadata, configGuard } = connector;
if (!metadata?.formItems || !configGuard?.safeParse) {
  fail(`${PACKAGES[provider]} has no metadata.formItems or configGuard`);
}

const fillTemplates = (templates) =>
  templates.map((template, index) => {
    const filled = { ...template };
    if (isPlaceholder(filled.templateCode)) {
      filled.templateCode = flags.has('--overseas')
        ? { china: templateCode(provider, index), overseas: overseasCode(index) }
        : templateCode(provider, index);
    }
    for (const [key, value] of Object.entries(filled)) {
      if (isPlaceholder(value)) fail(`no test value for the template key ${key} (${value})`);
    }
    return filled;
  });

if (metadata.configTemplate) {
  // A package that ships a whole config template (a JSON string in older kits).
  const template =
    typeof metadata.configTemplate === 'string' ? JSON.parse(metadata.configTemplate) : metadata.configTemplate;
  config = {};
  for (const [key, value] of Object.entries(template)) {
    if (key === 'templates') config.templates = fillTemplates(value);
    else if (isPlaceholder(value) || key in VALUES[provider]) config[key] = VALUES[provider][key];
    else config[key] = value;
  }
} else {
  // Logto's console: one field per form item, starting from its defaultValue.
  config = {};
  for (const item of metadata.formItems) {
    if (item.key === 'templates') {
      config.templates = fillTemplates(item.defaultValue ?? []);
    } else if (item.key in VALUES[provider]) {
      config[item.key] = VALUES[provider][item.key];
    } else if (item.defaultValue !== undefined) {
      config[item.key] = item.defaultValue;
    } else if (item.required) {
      fail(`no test value for the required form item ${item.key}`);
    }
  }
}
for (const [key, value] of Object.entries(config)) {
  if (value === undefined) fail(`no test value for ${key}`);
}

// The package's own guard, as Logto's validateConfig runs it.
const result = configGuard.safeParse(config);
if (!result.success) {
  fail(`${PACKAGES[provider]}'s config guard refused the config: ${result.error.message}`);
}
process.stdout.write(`${JSON.stringify(flags.has('--parsed') ? result.data : config)}\n`);
