// Command check serves and calls the stubs courier-stubgen generated for
// shop/cart/cart.proto (every method kind, an app error, nested and
// cross-package messages): run by go-cgo's TestStubgenGoOutputBuilds in a
// module of its own. Prints "ok <check>" per check; exits 1 on a failure.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	courier "github.com/courier-rpc/courier/go-cgo"

	"example.com/stubcheck/shop/cart"
	"example.com/stubcheck/shop/common"
)

type cartServer struct{}

func (cartServer) Add(ctx context.Context, it *cart.Item) (*cart.AddReply, error) {
	if it.Sku == "" {
		return nil, cart.CartError_CART_ERROR_NO_SUCH_ITEM.Err("no sku")
	}
	return &cart.AddReply{Count: int32(len(it.Options)), Total: it.Price}, nil
}

func (cartServer) List(ctx context.Context, req *cart.ListRequest, stream *courier.ServerStream[cart.Item]) error {
	for i := int32(0); i < req.Limit; i++ {
		if err := stream.Send(&cart.Item{Sku: fmt.Sprint(i), Kind: cart.Item_KIND_BOOK}); err != nil {
			return err
		}
	}
	return nil
}

func (cartServer) Upload(ctx context.Context, stream *courier.RecvStream[cart.Item]) (*cart.AddReply, error) {
	out := &cart.AddReply{Total: &common.Money{Currency: common.Currency_CURRENCY_EUR}}
	for {
		it, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out.Count++
		out.Total.Units += it.GetPrice().GetUnits()
	}
}

func (cartServer) Sync(ctx context.Context, stream *courier.BidiStream[cart.Item, cart.Item]) error {
	for {
		it, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		it.Options = append(it.Options, &cart.Item_Option{Key: "synced", Value: "yes"})
		if err := stream.Send(it); err != nil {
			return err
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	s := courier.NewServer(courier.IOThreads(1))
	if err := cart.RegisterCartServer(s, cartServer{}); err != nil {
		fail("register: %v", err)
	}
	port, err := s.Listen("127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	if err := s.Start(); err != nil {
		fail("start: %v", err)
	}
	defer s.Stop(time.Second)
	cc, err := courier.Dial(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		fail("dial: %v", err)
	}
	defer cc.Close()
	c := cart.NewCartClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	price := &common.Money{Currency: common.Currency_CURRENCY_EUR, Units: 7,
		Rate: &common.Money_Rate{PerUnit: 1.5, Rounding: common.Money_Rate_ROUNDING_UP}}
	r, err := c.Add(ctx, &cart.Item{Sku: "b1", Options: []*cart.Item_Option{{Key: "k", Value: "v"}}, Price: price})
	if err != nil || r.Count != 1 || r.Total.GetRate().GetRounding() != common.Money_Rate_ROUNDING_UP {
		fail("Add: %v %v", r, err)
	}
	fmt.Println("ok unary")

	_, err = c.Add(ctx, &cart.Item{})
	if v, ok := cart.CartErrorOf(err); !ok || v != cart.CartError_CART_ERROR_NO_SUCH_ITEM || courier.CodeOf(err) != courier.NotFound {
		fail("app error: %v (%v %v)", err, v, ok)
	}
	fmt.Println("ok app error")

	ls, err := c.List(ctx, &cart.ListRequest{Limit: 3})
	if err != nil {
		fail("List: %v", err)
	}
	n := 0
	for ; ; n++ {
		it, err := ls.Recv()
		if err == io.EOF {
			break
		}
		if err != nil || it.Kind != cart.Item_KIND_BOOK {
			fail("List recv: %v %v", it, err)
		}
	}
	if n != 3 {
		fail("List: %d items", n)
	}
	fmt.Println("ok server streaming")

	up, err := c.Upload(ctx)
	if err != nil {
		fail("Upload: %v", err)
	}
	for i := 0; i < 4; i++ {
		if err := up.Send(&cart.Item{Price: &common.Money{Units: 10}}); err != nil {
			fail("Upload send: %v", err)
		}
	}
	total, err := up.CloseAndRecv()
	if err != nil || total.Count != 4 || total.Total.Units != 40 {
		fail("Upload: %v %v", total, err)
	}
	fmt.Println("ok client streaming")

	sy, err := c.Sync(ctx)
	if err != nil {
		fail("Sync: %v", err)
	}
	if err := sy.Send(&cart.Item{Sku: "s"}); err != nil {
		fail("Sync send: %v", err)
	}
	it, err := sy.Recv()
	if err != nil || it.Sku != "s" || len(it.Options) != 1 || it.Options[0].Key != "synced" {
		fail("Sync recv: %v %v", it, err)
	}
	sy.CloseSend()
	if _, err := sy.Recv(); err != io.EOF {
		fail("Sync end: %v", err)
	}
	fmt.Println("ok bidi")

	if cart.Cart_Upload_Method.DefaultDeadline != 500*time.Millisecond || cart.Cart_Add_Method.DefaultDeadline != 2*time.Second ||
		cart.Cart_Sync_Method.DefaultDeadline != courier.NoDeadline || cart.Cart_Add_Method.AppErrorEnum != "shop.cart.CartError" {
		fail("method descriptors: %+v %+v %+v", cart.Cart_Add_Method, cart.Cart_Upload_Method, cart.Cart_Sync_Method)
	}
	fmt.Println("ok descriptors")
}
