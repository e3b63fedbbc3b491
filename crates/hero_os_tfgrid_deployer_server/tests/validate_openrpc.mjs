// Validates an OpenRPC document (file given as argv[2]) against the official meta-schema
// (npm @open-rpc/meta-schema), as test-peers.md §8 describes. Prints "valid" or the errors.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const require = createRequire(process.env.PEERS_DIR + '/package.json');
const Ajv = require('ajv').default;
const addFormats = require('ajv-formats').default;
const metaModule = require('@open-rpc/meta-schema');
const openrpcDocument = metaModule.default ?? metaModule.openrpcDocument ?? metaModule;
const jsonSchemaToolsMeta = require('@json-schema-tools/meta-schema');
const jsonSchemaMeta = jsonSchemaToolsMeta.default ?? jsonSchemaToolsMeta;

const ajv = new Ajv({ strict: false, validateSchema: false });
addFormats(ajv);
ajv.addSchema(jsonSchemaMeta);
ajv.addSchema({ ...jsonSchemaMeta, $id: 'https://meta.json-schema.tools' });
const validate = ajv.compile(openrpcDocument);
const doc = JSON.parse(readFileSync(process.argv[2], 'utf8'));
if (validate(doc)) {
  console.log('valid');
} else {
  console.log(JSON.stringify(validate.errors, null, 2));
  process.exit(1);
}
