// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// The ERC-20 calls the vault makes.
interface IERC20 {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address who) external view returns (uint256);
}

/// OrderBookDEX's vault: holds the chain's coin and ERC-20 tokens for the exchange's accounts.
///
/// A deposit emits `Deposited` naming the exchange account it credits; the bridge credits it
/// after its confirmations. A withdrawal pays out only against a `WithdrawalPermit` that the
/// exchange's signer signed with EIP-712 under the exchange's domain (name "OrderBookDEX",
/// version "1", this chain, this vault as verifyingContract), before its deadline, and each
/// withdrawal id pays at most once (`paid`). The owner may rotate the signer and hand over
/// ownership; nobody can move funds without a permit.
contract Vault {
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant PERMIT_TYPEHASH = keccak256(
        "WithdrawalPermit(bytes32 withdrawalId,address to,address token,uint256 amount,uint256 deadline)"
    );
    /// secp256k1's group order halved: a signature with a larger s is the malleable twin.
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public owner;
    address public signer;
    mapping(bytes32 => bool) public paid;
    bool private entered;

    event Deposited(address indexed account, address indexed token, uint256 amount, address from);
    event Withdrawn(bytes32 indexed withdrawalId, address indexed to, address indexed token, uint256 amount);
    event SignerChanged(address previous, address current);
    event OwnerChanged(address previous, address current);

    error NotOwner();
    error ZeroAddress();
    error ZeroAmount();
    error AlreadyPaid(bytes32 withdrawalId);
    error PermitExpired(uint256 deadline);
    error BadSignature();
    error TransferFailed();
    error Reentrancy();
    error UseDeposit();

    constructor(address signer_) {
        if (signer_ == address(0)) revert ZeroAddress();
        owner = msg.sender;
        signer = signer_;
        emit OwnerChanged(address(0), msg.sender);
        emit SignerChanged(address(0), signer_);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier nonReentrant() {
        if (entered) revert Reentrancy();
        entered = true;
        _;
        entered = false;
    }

    /// The coin sent without naming an account would credit nobody: refuse it.
    receive() external payable {
        revert UseDeposit();
    }

    /// Deposit the chain's coin (msg.value, in wei) for `account`.
    function deposit(address account) external payable {
        if (account == address(0)) revert ZeroAddress();
        if (msg.value == 0) revert ZeroAmount();
        emit Deposited(account, address(0), msg.value, msg.sender);
    }

    /// Deposit `amount` of `token` (approved to this vault first) for `account`; the event
    /// names what the vault received, which a fee-taking token makes less than `amount`.
    function depositToken(address token, address account, uint256 amount) external nonReentrant {
        if (account == address(0) || token == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20(token).balanceOf(address(this));
        _call(token, abi.encodeCall(IERC20.transferFrom, (msg.sender, address(this), amount)));
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        emit Deposited(account, token, received, msg.sender);
    }

    /// Pay a withdrawal the exchange permitted: to `to`, `amount` of `token` (the zero address
    /// for the chain's coin), once per `withdrawalId`, before `deadline` (unix seconds).
    /// Anyone may submit the permit; only `to` receives.
    function withdraw(
        bytes32 withdrawalId,
        address to,
        address token,
        uint256 amount,
        uint256 deadline,
        bytes calldata signature
    ) external nonReentrant {
        if (paid[withdrawalId]) revert AlreadyPaid(withdrawalId);
        if (block.timestamp > deadline) revert PermitExpired(deadline);
        if (to == address(0)) revert ZeroAddress();
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, withdrawalId, to, token, amount, deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
        if (_recover(digest, signature) != signer) revert BadSignature();
        paid[withdrawalId] = true;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert TransferFailed();
        } else {
            _call(token, abi.encodeCall(IERC20.transfer, (to, amount)));
        }
        emit Withdrawn(withdrawalId, to, token, amount);
    }

    /// Rotate the key whose permits the vault pays (docs/operations.md "Rotating the bridge's key").
    function setSigner(address signer_) external onlyOwner {
        if (signer_ == address(0)) revert ZeroAddress();
        emit SignerChanged(signer, signer_);
        signer = signer_;
    }

    function setOwner(address owner_) external onlyOwner {
        if (owner_ == address(0)) revert ZeroAddress();
        emit OwnerChanged(owner, owner_);
        owner = owner_;
    }

    /// The exchange's EIP-712 domain separator: the same one its gateway verifies orders under.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("OrderBookDEX"), keccak256("1"), block.chainid, address(this))
        );
    }

    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) revert BadSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > HALF_N) revert BadSignature();
        address recovered = ecrecover(digest, v, r, s);
        if (recovered == address(0)) revert BadSignature();
        return recovered;
    }

    /// Call an ERC-20 that may return nothing (USDT-style) or a bool.
    function _call(address token, bytes memory data) private {
        (bool ok, bytes memory answer) = token.call(data);
        if (!ok || (answer.length != 0 && !abi.decode(answer, (bool))) || token.code.length == 0) {
            revert TransferFailed();
        }
    }
}
