package io.courier.testpeer;

import java.util.Arrays;

/**
 * The grpc-java peer: `server ...` serves courier.test.Test and bench.Echo,
 * `client ...` runs the interop matrix's cases against a server of
 * courier.test.Test. `java -jar courier-grpc-java-peer.jar server --help`.
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "";
        String[] rest = args.length > 0 ? Arrays.copyOfRange(args, 1, args.length) : args;
        switch (mode) {
            case "server" -> System.exit(PeerServer.run(rest));
            case "client" -> System.exit(Cases.run(rest));
            default -> {
                System.err.println("usage: courier-grpc-java-peer server|client [options] (--help for each)");
                System.exit(2);
            }
        }
    }
}
