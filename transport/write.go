package transport

import "time"

// writeFrame writes one framed payload (an acknowledgement) before
// deadline.
func (c *Conn) writeFrame(payload []byte, deadline time.Time) error {
	_, err := c.writeFrameN(payload, deadline, false)
	return err
}

// smallFrame is the size up to which a frame is copied into one buffer and
// written with one call; larger payloads go out with writev, uncopied.
const smallFrame = 16 << 10

// writeFrameN writes one framed payload before deadline and returns how
// many bytes reached the socket. exact makes deadline the one in force
// rather than an upper bound: a Send's write may take all of its timeout,
// which can be longer than WriteTimeout.
func (c *Conn) writeFrameN(payload []byte, deadline time.Time, exact bool) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Moving the deadline costs a timer update per write; for an
	// acknowledgement, a deadline in force that still leaves half of
	// WriteTimeout is good enough, unless it needs an earlier one. Not for a
	// Send: an acknowledgement's deadline left in force would cut its write
	// short of its timeout.
	if (exact && !deadline.Equal(c.wdl)) || deadline.Before(c.wdl) || time.Until(c.wdl) < c.cfg.WriteTimeout/2 {
		if err := c.nc.SetWriteDeadline(deadline); err != nil {
			return 0, err
		}
		c.wdl = deadline
	}
	var n int64
	var err error
	if len(payload) <= smallFrame {
		c.wbuf = c.cfg.Framing.AppendFrame(c.wbuf[:0], payload)
		var k int
		k, err = c.nc.Write(c.wbuf)
		n = int64(k)
	} else {
		bufs := c.cfg.Framing.Envelope(payload)
		n, err = bufs.WriteTo(c.nc)
	}
	if err != nil {
		return n, err
	}
	c.stats.framesOut.Add(1)
	c.stats.bytesOut.Add(int64(len(payload)))
	c.lastActivity.Store(time.Now().UnixNano())
	return n, nil
}
