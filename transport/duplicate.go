package transport

import "fmt"

// DuplicateError is returned by a Sink for a message it already holds (a
// resend of a message stored before, say by HL7 control id): the message is
// not stored again, and the connection answers it as the first one was
// answered, never negatively. It is counted as a duplicate
// (Counters.Duplicates).
type DuplicateError struct {
	// Seq is the sequence of the stored message, handed to the policy and
	// to AnswerRecorder as the message's.
	Seq uint64
	// Reply is the first answer, without framing, written again as is.
	// Nil: the policy answers as for a message just stored (Frame.Seq is
	// Seq).
	Reply []byte
	// Code is Reply's code, for counting; ignored when Reply is nil.
	Code AckCode
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("duplicate of stored message %d", e.Seq)
}

// AnswerRecorder, when a Sink implements it, is told what the connection
// answered each stored message (class FrameMessage) it received, and each
// duplicate answered by the policy (DuplicateError.Reply nil); not a
// duplicate answered with its first answer, which is recorded already.
// seq is the Sink's, r what the policy (or the duplicate's
// first answer) decided, and written whether r.Payload reached the socket
// (false when there was none, or the write failed). r.Payload is valid
// only during the call. Answered runs on the connection's read loop, after
// the write and before the next frame is read, so it must be quick and
// must not block.
type AnswerRecorder interface {
	Answered(m *Message, seq uint64, r Reply, written bool)
}
