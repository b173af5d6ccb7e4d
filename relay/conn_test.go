package relay

import (
	"bytes"
	"errors"
	"io"
	"net"
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
