/**
 * The start of most end-to-end test files: the shim installed, one private containerd
 * and one image of test files imported into it, made on first use and shared by every
 * test of the file (a containerd per test would cost seconds each).
 *
 * @module
 */

import { buildImage, type ImageConfig, type LayerFile } from "../../src/oci/image.ts";
import { type Containerd, type ContainerdOptions, startContainerd } from "./harness.ts";
import { installShim } from "./shim_install.ts";

/** What {@linkcode startSuite} made. */
export interface Suite {
  cd: Containerd;
  /** The image's reference (`<name>:e2e`). */
  image: string;
  /** A temp dir of the suite's own: the image tar and whatever the tests keep there. */
  tmp: string;
}

/** Options for {@linkcode startSuite}. */
export interface SuiteOptions {
  /** Names the image (`<name>:e2e`) and the temp dir (`shim-e2e-<name>-…`). */
  name: string;
  /** The image's one layer. */
  files: LayerFile[];
  /** The image config; default none beyond the defaults of `buildImage`. */
  config?: ImageConfig;
  /**
   * containerd's options besides the shim's bin dir; a function gets the temp dir
   * first (for a cache directory under it, say).
   */
  containerd?: ContainerdOptions | ((tmp: string) => ContainerdOptions);
}

/** Installs the shim, starts a private containerd and imports the suite's image. */
export async function startSuite(opts: SuiteOptions): Promise<Suite> {
  const { binDir } = await installShim();
  const tmp = await Deno.makeTempDir({ prefix: `shim-e2e-${opts.name}-` });
  const extra = typeof opts.containerd === "function"
    ? opts.containerd(tmp)
    : opts.containerd ?? {};
  const cd = await startContainerd({ ...extra, shimBinDir: binDir });
  const built = await buildImage({
    name: opts.name,
    tag: "e2e",
    outPath: `${tmp}/${opts.name}.tar`,
    config: opts.config ?? {},
    layers: [{ files: opts.files }],
  });
  await cd.importImage(built.path);
  return { cd, image: built.reference, tmp };
}

/** `make` called once, on the first call of the function returned; later calls share it. */
export function once<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => made ??= make();
}
