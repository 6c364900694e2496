import { chmod, mkdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * ~/.natpunch: where natpunch keeps what identifies this user (key files, known_peers). Only its owner may list or
 * read it (mode 0700, as ~/.ssh): a key or pin file that others can replace or read is no protection.
 */
export const HOME_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** The natpunch directory of the user running the process: $NATPUNCH_HOME, else $HOME/.natpunch. */
export function natpunchHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.NATPUNCH_HOME || join(env.HOME || homedir(), '.natpunch');
}

/**
 * Creates `dir` (and missing parents) with mode 0700. When it already exists with group or other permissions it is
 * tightened to 0700 and `warn` says so once (a directory the user made readable on purpose is still their choice
 * elsewhere; ~/.natpunch holds secrets). Returns true when the mode was changed.
 */
export async function ensurePrivateDir(dir: string, warn?: (line: string) => void): Promise<boolean> {
  await mkdir(dir, { recursive: true, mode: HOME_DIR_MODE });
  const st = await stat(dir);
  if ((st.mode & 0o077) === 0) return false;
  try {
    await chmod(dir, HOME_DIR_MODE);
    warn?.(`${dir} was mode ${(st.mode & 0o777).toString(8)}; changed to 700 (it holds keys and pinned peers)`);
    return true;
  } catch (err) {
    warn?.(
      `${dir} is mode ${(st.mode & 0o777).toString(8)} and could not be changed to 700 (${(err as NodeJS.ErrnoException).code ?? 'error'}); others may read it`,
    );
    return false;
  }
}
