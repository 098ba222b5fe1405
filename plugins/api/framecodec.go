package api

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/amber-backup/amber/plugins/api/amber/plugin/v1"
)

// frameCodec decodes the data frames of one backup stream into buffers it
// reuses, and every other message as gRPC's proto codec does. The proto
// codec copies each frame twice (the received pieces into one buffer, then
// the bytes field into a new slice) and allocates 1 MiB per frame; this one
// copies the pieces once, into the older of two buffers.
//
// A frame's data stays valid until the second Recv after the one that
// returned it: the stream's readers (chunkReader) copy a frame out before
// they receive the next. One codec serves one stream (Recv is not called
// concurrently on a stream).
type frameCodec struct {
	encoding.CodecV2
	bufs [2][]byte
	next int
}

func newFrameCodec() *frameCodec {
	return &frameCodec{CodecV2: encoding.GetCodecV2(proto.Name)}
}

func (c *frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*pb.BackupOutput)
	n := data.Len()
	if !ok || n < 4<<10 || n > ChunkSize+16 {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := c.bufs[c.next]
	if cap(buf) < n {
		buf = make([]byte, ChunkSize+16)
		c.bufs[c.next] = buf
	}
	buf = buf[:n]
	data.CopyTo(buf)
	// A data frame is field 2 (bytes) alone; anything else is decoded in
	// full, from a copy of its own.
	num, typ, k := protowire.ConsumeTag(buf)
	if k > 0 && num == 2 && typ == protowire.BytesType {
		b, l := protowire.ConsumeBytes(buf[k:])
		if l == len(buf)-k {
			c.next ^= 1
			m.Reset()
			m.Msg = &pb.BackupOutput_Data{Data: b}
			return nil
		}
	}
	return c.CodecV2.Unmarshal(data, v)
}
