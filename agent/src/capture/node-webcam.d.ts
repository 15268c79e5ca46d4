// node-webcam ships no types; this is the part of its API the webcam source uses.
declare module "node-webcam" {
  interface WebcamOptions {
    width: number;
    height: number;
    quality: number;
    delay: number;
    saveShots: boolean;
    output: "jpeg" | "png" | "bmp";
    device: string | false;
    callbackReturn: "location" | "buffer" | "base64";
    verbose: boolean;
  }
  interface Webcam {
    capture(location: string, callback: (err: Error | null, data: Buffer) => void): void;
  }
  export function create(options: Partial<WebcamOptions>): Webcam;
}
