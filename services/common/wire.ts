// Protobuf bytes by hand, for the hot paths that read or write a message per reading: a reader
// cursor (Wire) and a writer (WireOut). Field numbers are the callers'; see proto/vigil.
import { WireType } from '@bufbuild/protobuf/wire'

/**
 * A cursor over Protobuf bytes, for the few wire types Vigil's messages use. Hand-rolled rather than
 * BinaryReader, whose `tag()` makes an array per field: the store and the async scorer read ~20
 * fields a reading. Every read is bounds-checked: bytes cut short or malformed throw.
 */
export class Wire {
  pos = 0
  private readonly view: DataView
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }
  /** The wire type of the field `field()` read last. */
  wireType = 0
  /** Reads a field's tag: its number, its wire type into `wireType`. */
  field(): number {
    const tag = this.varint()
    this.wireType = tag & 7
    return Math.floor(tag / 8)
  }
  /** A varint that must fit 2^53 exactly (field tags, lengths); anything longer throws. */
  varint(): number {
    const v = this.varint64()
    if (typeof v !== 'number') throw new Error('a tag or length beyond 2^53')
    return v
  }
  /**
   * A 64-bit varint: a number when it has at most 7 bytes (49 bits, the usual case), else the
   * bigint of its low 64 bits (negative int64 values, very large uint64 ones).
   */
  varint64(): number | bigint {
    const start = this.pos
    let result = 0
    let scale = 1
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error('premature end of a varint')
      const b = this.buf[this.pos++] as number
      result += (b & 0x7f) * scale
      if (b < 0x80) {
        if (i < 7) return result
        let big = 0n
        for (let k = this.pos - 1; k >= start; k--) big = (big << 7n) | BigInt((this.buf[k] as number) & 0x7f)
        return BigInt.asUintN(64, big)
      }
      scale *= 128
    }
    throw new Error('varint longer than 10 bytes')
  }
  /** An int64/int32 varint (two's complement), for seconds and nanos. */
  signed(): number {
    const v = this.varint64()
    return typeof v === 'number' ? v : Number(BigInt.asIntN(64, v))
  }
  double(): number {
    if (this.pos + 8 > this.buf.length) throw new Error('premature end of a double')
    const v = this.view.getFloat64(this.pos, true)
    this.pos += 8
    return v
  }
  /** The end of a length-delimited field (its contents start at `pos`). */
  end(): number {
    const len = this.varint()
    const end = this.pos + len
    if (end > this.buf.length) throw new Error('premature end of a length-delimited field')
    return end
  }
  skip(wireType: number): void {
    if (wireType === WireType.Varint) this.varint()
    else if (wireType === WireType.Bit64) this.pos += 8
    else if (wireType === WireType.LengthDelimited) this.pos = this.end()
    else if (wireType === WireType.Bit32) this.pos += 4
    else throw new Error(`unexpected wire type ${wireType}`)
    if (this.pos > this.buf.length) throw new Error('premature end of a field')
  }
}

const HEADER = 3
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)
const encoder = new TextEncoder()

/**
 * Writes Protobuf into one growing buffer. A nested message is written without measuring it first:
 * `open` leaves room for its tag and a two-byte length, `close` writes them and, when the length
 * takes one byte (or more than two), moves the body into place — the bytes are the canonical ones.
 */
export class WireOut {
  buf: Uint8Array
  pos = 0
  private view: DataView

  constructor(size: number) {
    this.buf = new Uint8Array(size)
    this.view = new DataView(this.buf.buffer)
  }

  /** Starts over (the buffer is kept: a writer can serve message after message). */
  reset(): this {
    this.pos = 0
    return this
  }

  /** Room for `extra` more bytes. */
  ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.pos + extra))
    bigger.set(this.buf.subarray(0, this.pos))
    this.buf = bigger
    this.view = new DataView(bigger.buffer)
  }

  varint(n: number): void {
    const buf = this.buf
    while (n >= 0x80) {
      buf[this.pos++] = (n & 0x7f) | 0x80
      n = Math.floor(n / 0x80)
    }
    buf[this.pos++] = n
  }

  /** A double field; zero is left out as proto3 does (negative zero is written). */
  double(field: number, value: number): void {
    if (value === 0 && !Object.is(value, -0)) return
    this.buf[this.pos++] = (field << 3) | WireType.Bit64
    this.view.setFloat64(this.pos, value, true)
    this.pos += 8
  }

  /** A double field written whatever its value (map entries write theirs always). */
  fixedDouble(field: number, value: number): void {
    this.buf[this.pos++] = (field << 3) | WireType.Bit64
    this.view.setFloat64(this.pos, value, true)
    this.pos += 8
  }

  /**
   * A varint field of a 64-bit integer: uint64, int64 or int32 (negative ones take ten bytes, two's
   * complement, as Protobuf writes them).
   */
  int64(field: number, value: bigint | number): void {
    this.buf[this.pos++] = (field << 3) | WireType.Varint
    if (typeof value === 'number' ? value >= 0 : value >= 0n && value <= MAX_SAFE) {
      this.varint(Number(value))
      return
    }
    let v = BigInt.asUintN(64, BigInt(value))
    while (v >= 0x80n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80
      v >>= 7n
    }
    this.buf[this.pos++] = Number(v)
  }

  /** A google.protobuf.Timestamp field (seconds and nanos, each left out when zero; the message written even then). */
  timestamp(field: number, seconds: bigint | number, nanos: number): void {
    this.ensure(32)
    const start = this.open()
    if (seconds !== 0 && seconds !== 0n) this.int64(1, seconds)
    if (nanos !== 0) this.int64(2, nanos)
    this.close(field, start)
  }

  /** A string field (UTF-8); empty is left out. Room for three bytes a character must be ensured. */
  string(field: number, text: string): void {
    const n = text.length
    if (n === 0) return
    if (n < 0x80) {
      // ASCII, the usual case, without an encoder call.
      const start = this.pos
      const buf = this.buf
      buf[start] = (field << 3) | WireType.LengthDelimited
      buf[start + 1] = n
      let k = 0
      for (; k < n; k++) {
        const c = text.charCodeAt(k)
        if (c > 0x7f) break
        buf[start + 2 + k] = c
      }
      if (k === n) {
        this.pos = start + 2 + n
        return
      }
    }
    this.bytes(field, encoder.encode(text))
  }

  /** A bytes or string field from `src[start, end)`; empty is left out. */
  bytes(field: number, src: Uint8Array, start = 0, end = src.length): void {
    if (end > start) this.message(field, src, start, end)
  }

  /** A length-delimited field from `src[start, end)`, written even when empty (a present message). */
  message(field: number, src: Uint8Array, start: number, end: number): void {
    this.buf[this.pos++] = (field << 3) | WireType.LengthDelimited
    this.varint(end - start)
    this.copy(src, start, end)
  }

  /** Bytes already encoded (whole fields). */
  raw(src: Uint8Array): void {
    this.copy(src, 0, src.length)
  }

  private copy(src: Uint8Array, start: number, end: number): void {
    // Most ranges are a few bytes (ids, names, one map entry): a loop beats making a subarray.
    if (end - start > 64) this.buf.set(src.subarray(start, end), this.pos)
    else for (let k = start; k < end; k++) this.buf[this.pos + k - start] = src[k] as number
    this.pos += end - start
  }

  /** Starts a nested message (field numbers below 16); returns what `close` takes. */
  open(): number {
    this.pos += HEADER
    return this.pos
  }

  /** Ends the nested message `open` started. */
  close(field: number, start: number): void {
    const length = this.pos - start
    const header = 1 + (length < 0x80 ? 1 : length < 0x4000 ? 2 : length < 0x200000 ? 3 : 4)
    if (header !== HEADER) {
      this.ensure(header - HEADER)
      this.buf.copyWithin(start - HEADER + header, start, this.pos)
      this.pos += header - HEADER
    }
    const end = this.pos
    this.pos = start - HEADER
    this.buf[this.pos++] = (field << 3) | WireType.LengthDelimited
    this.varint(length)
    this.pos = end
  }

  /** The bytes written, in a buffer of their own. */
  result(): Uint8Array {
    return this.buf.slice(0, this.pos)
  }
}

/**
 * Strings made from byte ranges, remembered by their bytes (FNV-1a, then a byte comparison), for
 * text that repeats from message to message (device ids, sensor names, sites): a hit makes no new
 * string. Ranges over 128 bytes are not kept. Bounded; cleared when full.
 */
export class ByteStringCache {
  private readonly buckets = new Map<number, { bytes: Uint8Array; text: string }[]>()
  private size = 0

  constructor(
    private readonly make: (buf: Uint8Array, start: number, end: number) => string,
    private readonly max = 50_000,
  ) {}

  get(buf: Uint8Array, start: number, end: number): string {
    const n = end - start
    if (n > 128) return this.make(buf, start, end)
    let h = 0x811c9dc5
    for (let k = start; k < end; k++) h = Math.imul(h ^ (buf[k] as number), 0x01000193)
    const bucket = this.buckets.get(h)
    if (bucket) {
      outer: for (const e of bucket) {
        if (e.bytes.length !== n) continue
        for (let k = 0; k < n; k++) if (e.bytes[k] !== buf[start + k]) continue outer
        return e.text
      }
    }
    if (this.size >= this.max) {
      this.buckets.clear()
      this.size = 0
    }
    const entry = { bytes: buf.slice(start, end), text: this.make(buf, start, end) }
    if (bucket) bucket.push(entry)
    else this.buckets.set(h, [entry])
    this.size++
    return entry.text
  }
}
