import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt-packet'
import { FrameSplitter, type PublishFrame } from './frames.js'

function split(version: 4 | 5, stream: Buffer, chunkSize: number) {
  const publishes: PublishFrame[] = []
  const others: Buffer[] = []
  const splitter = new FrameSplitter(
    1,
    () => version,
    (p) => publishes.push({ ...p, payload: Buffer.from(p.payload) }),
    (f) => others.push(Buffer.from(f)),
  )
  for (let at = 0; at < stream.length; at += chunkSize) splitter.push(stream.subarray(at, at + chunkSize))
  return { publishes, others }
}

describe('FrameSplitter', () => {
  for (const version of [4, 5] as const) {
    it(`decodes MQTT ${version === 5 ? '5' : '3.1.1'} PUBLISH frames however the stream is cut`, () => {
      const big = Buffer.alloc(3_000, 0x61) // a two-byte remaining length
      const frames = [
        mqtt.generate(
          {
            cmd: 'publish',
            topic: 'devices/ä-1/telemetry',
            payload: Buffer.from('{"a":1}'),
            qos: 1,
            messageId: 7,
            dup: false,
            retain: false,
            ...(version === 5
              ? {
                  properties: {
                    contentType: 'application/x-protobuf',
                    userProperties: { traceparent: '00-abc-def-01' },
                    payloadFormatIndicator: true,
                    messageExpiryInterval: 60,
                    responseTopic: 'r',
                    correlationData: Buffer.from([1, 2]),
                    subscriptionIdentifier: 300,
                  },
                }
              : {}),
          },
          { protocolVersion: version },
        ),
        mqtt.generate({ cmd: 'pingresp' }, { protocolVersion: version }),
        mqtt.generate(
          { cmd: 'publish', topic: 't', payload: big, qos: 0, dup: false, retain: false },
          { protocolVersion: version },
        ),
        mqtt.generate({ cmd: 'puback', messageId: 9 }, { protocolVersion: version }),
      ]
      const stream = Buffer.concat(frames)
      for (const chunkSize of [1, 2, 3, 7, 100, 65_536, stream.length]) {
        const { publishes, others } = split(version, stream, chunkSize)
        assert.equal(publishes.length, 2, `chunk ${chunkSize}`)
        assert.equal(publishes[0]?.topic, 'devices/ä-1/telemetry')
        assert.equal(publishes[0]?.qos, 1)
        assert.equal(publishes[0]?.messageId, 7)
        assert.equal(publishes[0]?.payload.toString(), '{"a":1}')
        assert.equal(publishes[0]?.contentType, version === 5 ? 'application/x-protobuf' : undefined)
        assert.equal(publishes[1]?.qos, 0)
        assert.equal(publishes[1]?.messageId, undefined)
        assert.deepEqual(publishes[1]?.payload, big)
        assert.deepEqual(others, [frames[1], frames[3]])
      }
    })
  }
})
