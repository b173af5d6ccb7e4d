package relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// A slow but steady peer is alive, however long a whole write takes; a
// peer that takes nothing is given up after the idle time.
func TestLiveConnJudgesByProgress(t *testing.T) {
	t.Run("slow reader", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		lc := newLiveConn(a, time.Second)
		data := testData(40 * liveStep) // 40 steps of 50 ms: twice the idle time, each step a twentieth of it
		got := make(chan []byte, 1)
		go func() {
			var out bytes.Buffer
			buf := make([]byte, liveStep)
			for out.Len() < len(data) {
				time.Sleep(50 * time.Millisecond)
				n, err := io.ReadFull(b, buf)
				out.Write(buf[:n])
				if err != nil {
					break
				}
			}
			got <- out.Bytes()
		}()
		if _, err := lc.Write(data); err != nil {
			t.Fatalf("write to a slow, steady reader: %v", err)
		}
		if !bytes.Equal(<-got, data) {
			t.Errorf("the reader got other bytes")
		}
	})
	t.Run("hung reader", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		lc := newLiveConn(a, 100*time.Millisecond)
		start := time.Now()
		_, err := lc.Write(testData(liveStep))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write to a peer that reads nothing: %v, want a deadline error", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("gave up after %v", d)
		}
	})
}

// Frames sent together reach the peer as the frames they are, in order,
// in one write; one over its type's limit sends none.
func TestCtrlSendsSeveralFramesAtOnce(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newCtrl(a, time.Second)
	addr := netip.MustParseAddrPort("10.77.0.2:4000")
	ps := [][]byte{parentMsg{stripes: 2, stripe: 0, addr: addr}.encode(), parentMsg{stripes: 2, stripe: 1, addr: addr}.encode()}
	writes := make(chan int, 1)
	go func() {
		buf := make([]byte, 4096)
		n, _ := b.Read(buf) // net.Pipe hands over one Write per Read, whole if it fits
		writes <- n
		got, err := readFrames(bytes.NewReader(buf[:n]))
		if err != nil || len(got) != 2 {
			writes <- -1
			return
		}
		for i, f := range got {
			if pm, err := decodeParent(f.payload); f.typ != msgParent || err != nil || pm.stripe != uint8(i) {
				writes <- -1
				return
			}
		}
		writes <- 0
	}()
	if err := c.send(msgParent, ps...); err != nil {
		t.Fatal(err)
	}
	if n := <-writes; n != 2*headerLen+len(ps[0])+len(ps[1]) {
		t.Errorf("the peer read %d bytes in its first read, want both frames", n)
	}
	if <-writes != 0 {
		t.Errorf("the peer did not read two parent frames, stripes 0 and 1, in order")
	}
	if err := c.send(msgParent, ps[0], make([]byte, maxPayload(msgParent)+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("send with a frame over its limit: %v, want ErrFrameTooLarge", err)
	}
}

// readFrames reads frames until r ends.
func readFrames(r io.Reader) ([]frame, error) {
	var out []frame
	for {
		f, err := readFrame(r, nil)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}
