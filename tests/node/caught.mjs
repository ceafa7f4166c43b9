// What an SDK call that should fail raised, as ``describe`` tells it; null if it did not.
export async function caught(call, describe) {
  try {
    await call();
    return null;
  } catch (error) {
    return describe(error);
  }
}
