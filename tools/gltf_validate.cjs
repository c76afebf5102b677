// Validate one .glb/.gltf with the Khronos glTF validator; prints the JSON report on stdout.
// Usage: node tools/gltf_validate.cjs FILE   (needs tools/install_gltf_validator.sh first)
const fs = require("fs");
const path = require("path");
const validator = require(path.join(__dirname, "node_modules", "gltf-validator"));
const file = process.argv[2];
validator
  .validateBytes(new Uint8Array(fs.readFileSync(file)), { maxIssues: 100 })
  .then((report) => process.stdout.write(JSON.stringify(report)))
  .catch((err) => {
    process.stderr.write(`gltf-validator failed: ${err}\n`);
    process.exit(2);
  });
