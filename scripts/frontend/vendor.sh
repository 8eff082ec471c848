#!/usr/bin/env bash
# Refresh the console's and /docs' vendored front-end assets from the npm registry
# (`make assets`). The copies are committed: the app serves them itself and no page loads
# anything from another host.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts
out=../../app/console/static/vendor
rm -rf "$out" && mkdir -p "$out"
cp node_modules/htmx.org/dist/htmx.min.js "$out/"
cp node_modules/htmx.org/LICENSE "$out/htmx.LICENSE"
cp node_modules/chart.js/dist/chart.umd.min.js "$out/chart.umd.min.js"
cp node_modules/chart.js/LICENSE.md "$out/chart.js.LICENSE.md"
cp node_modules/@picocss/pico/css/pico.min.css "$out/"
cp node_modules/@picocss/pico/LICENSE.md "$out/pico.LICENSE.md"
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css "$out/"
cp node_modules/swagger-ui-dist/LICENSE "$out/swagger-ui.LICENSE"
node -e 'const l=require("./package-lock.json").packages;for(const[k,v]of Object.entries(l))if(k)console.log(k.replace("node_modules/",""),v.version)' > "$out/VERSIONS"
# Source maps are not shipped; drop their trailing reference so no browser asks for one.
sed -i '/^\/\/# sourceMappingURL=/d' "$out"/*.js
sed -i 's#/\*\# sourceMappingURL=[^*]*\*/##' "$out"/*.css
