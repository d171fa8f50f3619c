// Starts @vercel/cosmosdb-server with one fix: reading a missing document answers 404, as Cosmos DB does.
// The stand-in's read handler dereferences the missing document and answers 500, which the SDK
// cannot tell from a server fault. Usage: node cosmos_server.js <cosmosdb-server dir> [cli options]
"use strict";
const path = require("path");

const root = path.resolve(process.argv[2]);
process.argv.splice(2, 1); // the CLI reads its options from argv[2] on
const read = require(path.join(root, "lib", "handler", "read-document.js"));
const original = read.default;
read.default = (account, req, res, params) => {
  try {
    return original(account, req, res, params);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    res.statusCode = 404;
    return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
  }
};
require(path.join(root, "lib", "cli.js"));
