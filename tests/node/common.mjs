// What the SDK scripts share.
import { createRequire } from "node:module";
import { join } from "node:path";

// An SDK's default export, from where `make install-dev` installs them: beside the Python
// test tools (NODE_SDKS, the virtualenv's node/), not in the repository's tree.
export function sdk(name) {
  return createRequire(join(process.env.NODE_SDKS, "package.json"))(name).default;
}

// What an SDK call that should fail raised, as ``describe`` tells it; null if it did not.
export async function caught(call, describe) {
  try {
    await call();
    return null;
  } catch (error) {
    return describe(error);
  }
}
