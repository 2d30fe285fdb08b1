/**
 * Splits a text stream into lines. (Deno's std has one, but JSR is not reachable from our
 * machines; this is the whole of it.)
 *
 * @module
 */

/** A TransformStream from text chunks to lines without their `\n`. */
export class TextLineStream extends TransformStream<string, string> {
  constructor() {
    let buffer = "";
    super({
      transform(chunk, controller) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) controller.enqueue(line.replace(/\r$/, ""));
      },
      flush(controller) {
        if (buffer) controller.enqueue(buffer);
      },
    });
  }
}
