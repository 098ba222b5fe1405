package api

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/amber-backup/amber/plugins/api/amber/plugin/v1"
)

// TestFrameCodec decodes what the proto codec encodes: data frames of every
// size, and the other messages, unchanged.
func TestFrameCodec(t *testing.T) {
	c := newFrameCodec()
	big := bytes.Repeat([]byte("entry-name-"), 1000)
	msgs := []*pb.BackupOutput{
		{Msg: &pb.BackupOutput_Data{Data: bytes.Repeat([]byte{7}, ChunkSize)}},
		{Msg: &pb.BackupOutput_Data{Data: []byte("small")}},
		{Msg: &pb.BackupOutput_Data{Data: bytes.Repeat([]byte{1, 2, 3}, 3000)}},
		{Msg: &pb.BackupOutput_Entry{Entry: &pb.EntryHeader{Name: string(big)}}},
		{Msg: &pb.BackupOutput_EntryEnd{EntryEnd: &pb.EntryEnd{Size: 42}}},
		{Msg: &pb.BackupOutput_Data{Data: bytes.Repeat([]byte{9}, 100000)}},
	}
	var prev *pb.BackupOutput
	var prevCopy []byte
	for i, want := range msgs {
		enc, err := c.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		// Received in pieces, as the transport hands them over.
		flat := enc.Materialize()
		var in mem.BufferSlice
		for len(flat) > 0 {
			k := min(len(flat), 16<<10)
			in = append(in, mem.SliceBuffer(flat[:k]))
			flat = flat[k:]
		}
		got := new(pb.BackupOutput)
		if err := c.Unmarshal(in, got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !gproto.Equal(got, want) {
			t.Fatalf("message %d decoded differently", i)
		}
		// The previous frame's data is still intact one Recv later.
		if prev != nil && !bytes.Equal(prev.GetData(), prevCopy) {
			t.Fatalf("message %d overwrote the data of message %d", i, i-1)
		}
		prev, prevCopy = got, bytes.Clone(got.GetData())
	}
}
