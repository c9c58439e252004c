/**
 * The MessagePack subset the gateway's `holdfast.v1.msgpack` encoding uses: nil, booleans,
 * integers and floats, strings, binary data, arrays and maps with string keys. Frames are the
 * same objects as in JSON, so a frame encodes as a map and `data` may hold binary values
 * (`Uint8Array`), which JSON cannot carry.
 *
 * Decoding reads every MessagePack type; extension values (other than the timestamp, read as a
 * `Date`) come back as `{ type, data }`. Map keys are read as strings.
 */

/** An extension value the client does not interpret. */
export interface MsgpackExtension {
  type: number;
  data: Uint8Array;
}

/** Largest nesting accepted when decoding, as the gateway bounds JSON nesting. */
const MAX_DEPTH = 128;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes `value` as MessagePack. `undefined` map entries are left out, as `JSON.stringify` does. */
export function encodeMsgpack(value: unknown): Uint8Array {
  const out = new Writer();
  write(out, value, 0);
  return out.finish();
}

/** Decodes one MessagePack value that fills `bytes` exactly; throws on malformed input. */
export function decodeMsgpack(bytes: Uint8Array): unknown {
  const reader = new Reader(bytes);
  const value = reader.read(0);
  if (reader.pos !== bytes.length) throw new RangeError("trailing bytes after the MessagePack value");
  return value;
}

class Writer {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(b: number): void {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  u16(n: number): void {
    this.reserve(2);
    this.view.setUint16(this.len, n);
    this.len += 2;
  }

  u32(n: number): void {
    this.reserve(4);
    this.view.setUint32(this.len, n);
    this.len += 4;
  }

  u64(n: bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.len, n);
    this.len += 8;
  }

  i64(n: bigint): void {
    this.reserve(8);
    this.view.setBigInt64(this.len, n);
    this.len += 8;
  }

  f64(n: number): void {
    this.reserve(8);
    this.view.setFloat64(this.len, n);
    this.len += 8;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Writes a length-prefixed header: the fix form when `len < fixMax`, then 8 (if given), 16 and 32 bit forms. */
function header(out: Writer, len: number, fix: number, fixMax: number, c8: number | undefined, c16: number, c32: number): void {
  if (len < fixMax) out.u8(fix | len);
  else if (c8 !== undefined && len < 0x100) {
    out.u8(c8);
    out.u8(len);
  } else if (len < 0x10000) {
    out.u8(c16);
    out.u16(len);
  } else {
    out.u8(c32);
    out.u32(len);
  }
}

function write(out: Writer, value: unknown, depth: number): void {
  if (depth > MAX_DEPTH) throw new RangeError("value nested too deeply for MessagePack");
  if (value === null || value === undefined) {
    out.u8(0xc0);
  } else if (typeof value === "boolean") {
    out.u8(value ? 0xc3 : 0xc2);
  } else if (typeof value === "number") {
    writeNumber(out, value);
  } else if (typeof value === "bigint") {
    if (value >= 0n) {
      out.u8(0xcf);
      out.u64(value);
    } else {
      out.u8(0xd3);
      out.i64(value);
    }
  } else if (typeof value === "string") {
    const b = utf8Encoder.encode(value);
    header(out, b.length, 0xa0, 32, 0xd9, 0xda, 0xdb);
    out.bytes(b);
  } else if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    const b = value instanceof ArrayBuffer ? new Uint8Array(value) : value;
    header(out, b.length, 0, 0, 0xc4, 0xc5, 0xc6);
    out.bytes(b);
  } else if (Array.isArray(value)) {
    header(out, value.length, 0x90, 16, undefined, 0xdc, 0xdd);
    for (const item of value) write(out, item, depth + 1);
  } else if (value instanceof Date) {
    writeNumber(out, value.getTime());
  } else if (typeof value === "object") {
    const withToJson = value as { toJSON?: () => unknown };
    if (typeof withToJson.toJSON === "function") {
      write(out, withToJson.toJSON(), depth + 1);
      return;
    }
    const entries = Object.entries(value).filter(([, v]) => v !== undefined && typeof v !== "function");
    header(out, entries.length, 0x80, 16, undefined, 0xde, 0xdf);
    for (const [k, v] of entries) {
      write(out, k, depth + 1);
      write(out, v, depth + 1);
    }
  } else {
    // Functions and symbols have no MessagePack form, as they have no JSON one.
    out.u8(0xc0);
  }
}

function writeNumber(out: Writer, n: number): void {
  if (!Number.isInteger(n) || Object.is(n, -0)) {
    out.u8(0xcb);
    out.f64(n);
  } else if (n >= 0) {
    if (n < 0x80) out.u8(n);
    else if (n < 0x100) {
      out.u8(0xcc);
      out.u8(n);
    } else if (n < 0x10000) {
      out.u8(0xcd);
      out.u16(n);
    } else if (n < 0x1_0000_0000) {
      out.u8(0xce);
      out.u32(n);
    } else if (Number.isSafeInteger(n)) {
      out.u8(0xcf);
      out.u64(BigInt(n));
    } else {
      out.u8(0xcb);
      out.f64(n);
    }
  } else if (n >= -32) {
    out.u8(n & 0xff);
  } else if (n >= -0x80) {
    out.u8(0xd0);
    out.u8(n & 0xff);
  } else if (n >= -0x8000) {
    out.u8(0xd1);
    out.u16(n & 0xffff);
  } else if (n >= -0x8000_0000) {
    out.u8(0xd2);
    out.u32(n >>> 0);
  } else if (Number.isSafeInteger(n)) {
    out.u8(0xd3);
    out.i64(BigInt(n));
  } else {
    out.u8(0xcb);
    out.f64(n);
  }
}

class Reader {
  pos = 0;
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private need(n: number): number {
    const at = this.pos;
    if (at + n > this.bytes.length) throw new RangeError("truncated MessagePack value");
    this.pos += n;
    return at;
  }

  private u8(): number {
    return this.view.getUint8(this.need(1));
  }

  private u16(): number {
    return this.view.getUint16(this.need(2));
  }

  private u32(): number {
    return this.view.getUint32(this.need(4));
  }

  private take(n: number): Uint8Array {
    const at = this.need(n);
    return this.bytes.slice(at, at + n);
  }

  private str(n: number): string {
    const at = this.need(n);
    return utf8Decoder.decode(this.bytes.subarray(at, at + n));
  }

  /** A 64-bit integer as a number when it is safe, as a bigint otherwise. */
  private int64(signed: boolean): number | bigint {
    const at = this.need(8);
    const big = signed ? this.view.getBigInt64(at) : this.view.getBigUint64(at);
    return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }

  private array(n: number, depth: number): unknown[] {
    const items: unknown[] = [];
    for (let i = 0; i < n; i++) items.push(this.read(depth + 1));
    return items;
  }

  private map(n: number, depth: number): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const key = this.read(depth + 1);
      const value = this.read(depth + 1);
      // Own data properties, so a `__proto__` key cannot reach the prototype.
      Object.defineProperty(obj, String(key), { value, enumerable: true, writable: true, configurable: true });
    }
    return obj;
  }

  private ext(n: number): unknown {
    const type = this.view.getInt8(this.need(1));
    const data = this.take(n);
    if (type === -1) {
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      if (n === 4) return new Date(v.getUint32(0) * 1000);
      if (n === 8) {
        const hi = v.getUint32(0);
        const lo = v.getUint32(4);
        const nanos = hi >>> 2;
        const secs = (hi & 0x3) * 0x1_0000_0000 + lo;
        return new Date(secs * 1000 + nanos / 1e6);
      }
      if (n === 12) return new Date(Number(v.getBigInt64(4)) * 1000 + v.getUint32(0) / 1e6);
    }
    return { type, data } satisfies MsgpackExtension;
  }

  read(depth: number): unknown {
    if (depth > MAX_DEPTH) throw new RangeError("MessagePack value nested too deeply");
    const b = this.u8();
    if (b < 0x80) return b;
    if (b < 0x90) return this.map(b & 0x0f, depth);
    if (b < 0xa0) return this.array(b & 0x0f, depth);
    if (b < 0xc0) return this.str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.take(this.u8());
      case 0xc5:
        return this.take(this.u16());
      case 0xc6:
        return this.take(this.u32());
      case 0xc7:
        return this.ext(this.u8());
      case 0xc8:
        return this.ext(this.u16());
      case 0xc9:
        return this.ext(this.u32());
      case 0xca:
        return this.view.getFloat32(this.need(4));
      case 0xcb:
        return this.view.getFloat64(this.need(8));
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf:
        return this.int64(false);
      case 0xd0:
        return this.view.getInt8(this.need(1));
      case 0xd1:
        return this.view.getInt16(this.need(2));
      case 0xd2:
        return this.view.getInt32(this.need(4));
      case 0xd3:
        return this.int64(true);
      case 0xd4:
        return this.ext(1);
      case 0xd5:
        return this.ext(2);
      case 0xd6:
        return this.ext(4);
      case 0xd7:
        return this.ext(8);
      case 0xd8:
        return this.ext(16);
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16(), depth);
      case 0xdd:
        return this.array(this.u32(), depth);
      case 0xde:
        return this.map(this.u16(), depth);
      case 0xdf:
        return this.map(this.u32(), depth);
      default:
        throw new RangeError(`0x${b.toString(16)} is not a MessagePack type`);
    }
  }
}
