package hl7_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
)

func ExampleAppendAck() {
	msg := []byte("MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB|GOOD HEALTH HOSPITAL|20261125101500||ADT^A01^ADT_A01|MSG00001|P|2.5\r" +
		"PID|1||PATID1234^^^GOOD HEALTH HOSPITAL^MR||EVERYMAN^ADAM\r")

	req := hl7.AckRequest{
		Code:      hl7.AA,
		ControlID: "ACK-0001", // a new id for the ACK itself
		Time:      time.Date(2026, 11, 25, 10, 15, 1, 0, time.UTC),
	}
	h, err := hl7.ParseHeader(msg)
	if err != nil {
		// Never stay silent: reject with whatever fields could be read.
		req.Code, req.ErrorCode, req.Text = hl7.AR, "102", "unreadable header"
	}
	ack := hl7.AppendAck(nil, h, req)

	fmt.Println(strings.ReplaceAll(string(ack), "\r", "\n"))
	// Output:
	// MSH|^~\&|LAB|GOOD HEALTH HOSPITAL|ADT1|GOOD HEALTH HOSPITAL|20261125101501||ACK^A01^ACK|ACK-0001|P|2.5
	// MSA|AA|MSG00001
}
