import sharp from "sharp";
import { SCENES_DIR } from "./scenes.ts";

/** A real JPEG of a fixture scene at `width` px wide: frames whose size says which they are. */
export async function sceneJpeg(width: number, scene = "landscape.png"): Promise<Buffer> {
  return sharp(`${SCENES_DIR}${scene}`).resize({ width }).jpeg({ quality: 85 }).toBuffer();
}
